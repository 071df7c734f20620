"""A webhook receiver for kubebridge's tests: checks each request as a user's endpoint would and
records what it accepted.

Every request is checked for its bearer token and Standard Webhooks signature (the
`standardwebhooks` library), then parsed with the CloudEvents SDK's HTTP binding (`from_http`;
each member of a batch as a structured event). Accepted events are appended to --out as JSON lines
of their attributes. A script (POST /_script, a JSON list) makes the next requests fail: each step
answers `status` (with `retry_after`, `body`), waits `delay` seconds first, or `drop`s the
connection, for `times` requests or for `seconds`. GET /_stats returns the counters, including
`overlaps`: requests that arrived while an earlier request carrying the same object was in flight.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings import http as cehttp
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True, help="0: any free port, written to --port-file")
parser.add_argument("--port-file", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--secret")
parser.add_argument("--token")
args = parser.parse_args()

lock = threading.Lock()
script = []
in_flight = {}
stats = {"requests": 0, "accepted_requests": 0, "events": 0, "bad_signatures": 0, "bad_tokens": 0, "parse_errors": 0,
         "overlaps": 0, "statuses": {}, "modes": {}, "max_in_flight": 0}
out = open(args.out, "a", encoding="utf-8")
webhook = Webhook(args.secret) if args.secret else None


def next_step():
    with lock:
        while script:
            step = script[0]
            if "seconds" in step:
                step.setdefault("until", time.monotonic() + step["seconds"])
                if time.monotonic() < step["until"]:
                    return step
                script.pop(0)
                continue
            step["times"] = step.get("times", 1) - 1
            if step["times"] <= 0:
                script.pop(0)
            return step
    return None


def attributes(event):
    return {name: (value.isoformat() if hasattr(value, "isoformat") else value) for name, value in event.get_attributes().items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def reply(self, status, body=b"", headers=()):
        with lock:
            stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            body = json.dumps(stats).encode()
        self.reply(200, body, [("Content-Type", "application/json")])

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:
            # The sender died mid-request (the crash tests SIGKILL it): nothing arrived to judge.
            self.close_connection = True
            return
        if self.path == "/_script":
            with lock:
                script[:] = json.loads(body)
            return self.reply(204)
        headers = {name.lower(): value for name, value in self.headers.items()}
        with lock:
            stats["requests"] += 1
        step = next_step()
        if step and step.get("delay"):
            time.sleep(step["delay"])
        if step and step.get("drop"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if step and step.get("status"):
            extra = [("Retry-After", str(step["retry_after"]))] if "retry_after" in step else []
            return self.reply(step["status"], step.get("body", "").encode(), extra)
        if args.token and headers.get("authorization") != "Bearer " + args.token:
            with lock:
                stats["bad_tokens"] += 1
            return self.reply(401, b"bad token")
        if webhook:
            try:
                webhook.verify(body, headers)
            except Exception as error:
                with lock:
                    stats["bad_signatures"] += 1
                return self.reply(400, ("bad signature: %s" % error).encode())
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("application/cloudevents-batch+json"):
                mode = "batch"
                events = [cehttp.from_http(cehttp.HTTPMessage(headers={"content-type": "application/cloudevents+json"},
                                                              body=json.dumps(item).encode()), JSONFormat())
                          for item in json.loads(body)]
            else:
                mode = "binary" if any(name.startswith("ce-") for name in headers) else "structured"
                events = [cehttp.from_http(cehttp.HTTPMessage(headers=headers, body=body), JSONFormat())]
        except Exception as error:
            with lock:
                stats["parse_errors"] += 1
            return self.reply(400, ("not a CloudEvent: %s" % error).encode())
        keys = [event.get_extension("partitionkey") for event in events]
        with lock:
            stats["overlaps"] += sum(1 for key in keys if in_flight.get(key))
            for key in keys:
                in_flight[key] = in_flight.get(key, 0) + 1
            stats["max_in_flight"] = max(stats["max_in_flight"], sum(1 for value in in_flight.values() if value))
        try:
            if step and step.get("hold"):
                time.sleep(step["hold"])
            records = []
            for event in events:
                record = attributes(event)
                record["_mode"] = mode
                record["_webhook_id"] = headers.get("webhook-id")
                data = event.get_data()
                record["_name"] = data.get("metadata", {}).get("name") if isinstance(data, dict) else None
                records.append(json.dumps(record))
            with lock:
                out.write("".join(line + "\n" for line in records))
                out.flush()
                stats["events"] += len(events)
                stats["accepted_requests"] += 1
                stats["modes"][mode] = stats["modes"].get(mode, 0) + 1
        finally:
            with lock:
                for key in keys:
                    in_flight[key] -= 1
        self.reply(200)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gave up on a slow answer (a scripted delay) is expected, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", args.port), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w") as port_file:
    port_file.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
