#!/usr/bin/env python3
"""One keep-alive connection sending `GET /hello` (or PATH) requests one after another.

    hello-client.py PORT WARMUP REQUESTS [PATH BODY_FILE]

Each request is sent only after the previous answer has been read in full (status line,
headers, a Content-Length body), so the server sees exactly one request in flight. Every
answer must be `200` with the body `Hello, World!` (or BODY_FILE's bytes); anything else, a closed connection or a
stalled answer (10 s) ends the client with a message on stderr and status 1.

The client talks with whoever started it through its stdin and stdout, so that the server's
counters can be zeroed and dumped with the connection idle and open:
  after WARMUP requests it prints `warm WARMUP` and waits for a line on stdin;
  after REQUESTS more it prints `done REQUESTS` and waits for a line on stdin;
  then it closes the connection and exits 0.
"""
import socket
import sys

BODY = b"Hello, World!"


def fail(message):
    print(f"hello-client: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


class Connection:
    def __init__(self, port, path, body):
        self.request_bytes = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            fail("the server closed the connection")
        self.buffer += chunk

    def request(self, number):
        self.sock.sendall(self.request_bytes)
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200 "):
            fail(f"request {number}: status line {lines[0]!r}")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                fail(f"request {number}: the server asked to close the connection")
        if length is None:
            fail(f"request {number}: no Content-Length")
        while len(self.buffer) < length:
            self.fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if body != self.body:
            fail(f"request {number}: body {body!r}")


def main():
    port, warmup, requests = (int(a) for a in sys.argv[1:4])
    path, body = b"/hello", BODY
    if len(sys.argv) > 5:
        path = sys.argv[4].encode()
        with open(sys.argv[5], "rb") as f:
            body = f.read()
    connection = Connection(port, path, body)
    try:
        for n in range(warmup):
            connection.request(n + 1)
        print(f"warm {warmup}", flush=True)
        sys.stdin.readline()
        for n in range(requests):
            connection.request(warmup + n + 1)
        print(f"done {requests}", flush=True)
        sys.stdin.readline()
    except (OSError, ValueError) as error:
        fail(str(error))
    connection.sock.close()


if __name__ == "__main__":
    main()
