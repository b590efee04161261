"""Weight formats: what the native format and AdapterHub's share.

- `locations`: where each adapter and fusion variable lives (`Location`, `adapter_locations`,
  `fusion_locations`, `module_variable`), the tables both `saving` (native) and `adapterhub` read.
- `native`, `adapterhub`: the package's format and AdapterHub's (adapters, LoRAs, fusions, heads).
- `peft`: `load_peft_lora`, LoRAs published in PEFT's format.
"""
