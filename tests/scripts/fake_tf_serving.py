"""A stand-in for TF Serving's REST predict API, for tests on machines without tensorflow_model_server.

It implements `POST /v1/models/<name>[/versions/<v>]:predict` with the row format
(`{"signature_name", "instances"}` -> `{"predictions": [...]}`) over one loaded
SavedModel, as TF Serving documents it. It is not TF Serving.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$")


def serve(version_dir, model_name, port=0):
    """Start the server on 127.0.0.1 in a thread; returns (server, base_url)."""
    loaded = tf.saved_model.load(version_dir)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            match = ROUTE.match(self.path)
            if not match or match["name"] != model_name:
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = request.get("signature_name", "serving_default")
            if signature not in loaded.signatures:
                return self._reply(400, {"error": f"Serving signature name: \"{signature}\" not found"})
            instances = request["instances"]
            inputs = {k: tf.constant(np.array([inst[k] for inst in instances], np.int64)) for k in instances[0]}
            try:
                outputs = {k: v.numpy() for k, v in loaded.signatures[signature](**inputs).items()}
            except tf.errors.InvalidArgumentError as e:  # TF Serving: 400 with the op's message
                return self._reply(400, {"error": e.message})
            predictions = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(instances))]
            return self._reply(200, {"predictions": predictions})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
