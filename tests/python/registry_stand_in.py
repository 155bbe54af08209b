#!/usr/bin/env python3
"""A minimal stand-in for a Confluent Schema Registry, for the tests only (no registry server installs from the
package registries these tests may use): the endpoints Confluent's Python serializer and costsim-breaker call.

  POST /subjects/{subject}/versions   register a schema ({"schema": "..."}); the same text gets the same id
  GET  /schemas/ids/{id}              {"schema": "..."} or 404

Every request must carry HTTP basic auth USER:PASSWORD (argv[1]); others get 401. While the file argv[2] (if
given) exists, GET /schemas/ids/ answers 503, as a registry that is down would. Listens on 127.0.0.1, port 0, and
prints the port on the first line of stdout; then prints one line per request ("GET /schemas/ids/1").
"""

import base64
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXPECTED = "Basic " + base64.b64encode(sys.argv[1].encode()).decode()
SCHEMAS = []  # index + 1 is the id
SUBJECTS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorised(self):
        with LOCK:
            print(f"{self.command} {self.path}", flush=True)
        if self.headers.get("Authorization") != EXPECTED:
            self.reply(401, {"error_code": 401, "message": "Unauthorized"})
            return False
        return True

    def do_GET(self):
        if not self.authorised():
            return
        if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
            self.reply(503, {"error_code": 50301, "message": "down for the test"})
            return
        match = re.fullmatch(r"/schemas/ids/(\d+)(\?.*)?", self.path)
        if match and 0 < int(match.group(1)) <= len(SCHEMAS):
            self.reply(200, {"schema": SCHEMAS[int(match.group(1)) - 1]})
        else:
            self.reply(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self):
        if not self.authorised():
            return
        match = re.fullmatch(r"/subjects/([^/?]+)/versions(\?.*)?", self.path)
        if not match:
            self.reply(404, {"error_code": 404, "message": "Not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        schema = body["schema"]
        with LOCK:
            if schema not in SCHEMAS:
                SCHEMAS.append(schema)
            schema_id = SCHEMAS.index(schema) + 1
            versions = SUBJECTS.setdefault(match.group(1), [])
            if schema_id not in versions:
                versions.append(schema_id)
        self.reply(200, {"id": schema_id, "subject": match.group(1), "version": versions.index(schema_id) + 1,
                         "schema": schema})

    def log_message(self, *_args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
