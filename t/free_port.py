#!/usr/bin/python3
# A free TCP port on 127.0.0.1 below the ephemeral range (32768 and up on
# Linux), so that no outgoing connection or port-0 listener can take it
# meanwhile: for t/prove.sh and bench/run.sh.
import random
import socket

while True:
    port = random.randrange(20000, 30000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
