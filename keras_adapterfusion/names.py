"""The one naming rule for adapters, fusions, heads, tasks and exported models.

Names become dictionary keys, Keras layer names, weight paths, AdapterHub keys
(`adapters.{name}.`, a fusion's adapters joined by commas) and directory names,
so one rule, checked here and nowhere else, keeps all of them unambiguous and
inside their target directory:

- a non-empty `str`, without leading or trailing whitespace;
- not `.` or `..`;
- no path separator (`/`, `\\`), no comma (AdapterHub joins fused adapters'
  names with commas), no control character.

Example:

```python
from keras_adapterfusion.names import check_name

check_name("sentiment", "adapter name")   # returns "sentiment"
check_name("..", "adapter name")          # InvalidNameError
```
"""

import re

from keras_adapterfusion.errors import InvalidNameError

FORBIDDEN_CHARACTERS = ("/", "\\", ",")
_PATH_SAFE = re.compile(r"[A-Za-z0-9_.-]")


def check_name(name, what="name"):
    """Return `name` if it follows the naming rule; raise `InvalidNameError` naming `what` otherwise.

    Args:
        name: the name to check.
        what: what the name is for, used in the message (e.g. `"adapter name"`,
            `"--model-name"`).

    Returns:
        `name`, unchanged.

    Raises:
        InvalidNameError: the message names `what`, the value and the rule.
    """
    rule = "a non-empty name without '/', '\\\\', ',' or control characters, not '.' or '..'"
    if not isinstance(name, str):
        raise InvalidNameError(f"{what}: got {name!r} ({type(name).__name__}); expected a string, {rule}.")
    if name in ("", ".", ".."):
        raise InvalidNameError(f"{what}: got {name!r}; expected {rule}.")
    bad = [c for c in FORBIDDEN_CHARACTERS if c in name]
    if bad:
        raise InvalidNameError(f"{what}: got {name!r}, which contains {bad[0]!r}; expected {rule}.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidNameError(f"{what}: got {name!r}, which contains a control character; expected {rule}.")
    if name != name.strip():
        raise InvalidNameError(f"{what}: got {name!r}, which starts or ends with whitespace; expected {rule}.")
    return name


def path_part(key):
    """`key` (a name, or a fusion key with commas) as it appears in layer names and weight paths.

    TensorFlow accepts only `A-Za-z0-9_.->` in scope names, so every other
    character becomes `>` + its code point in hex + `>` (`"a,b"` -> `"a>2c>b"`).
    Distinct keys give distinct parts.
    """
    return "".join(c if _PATH_SAFE.fullmatch(c) else f">{ord(c):x}>" for c in key)
