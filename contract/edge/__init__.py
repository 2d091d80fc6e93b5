"""The public-port edge both programs share: what happens to a connection before it is routed
(router) or served (worker).

Both the router and the worker serve their public port on asyncio protocols of their own and
pass plain HTTP, as bytes, to a Starlette app that uvicorn serves on a private Unix socket. The
pieces of that are the same for both, so they live here once:

```
heads.py           HTTP/1.1 heads over bytes (no I/O): the size limit, upgrade or not, parsing
                   with websockets' sans-I/O parser, one value of a header that must have one,
                   client-sent internal headers removed, canned error answers
greeter.py         a new connection until its head is read (limit and deadline enforced):
                   then a WebSocket upgrade for the program, or plain HTTP for the relay
http_relay.py      plain HTTP relayed as bytes to the private socket; 503 when it fails
flow.py            back-pressure between the two sockets of a byte relay
private_socket.py  the private Unix socket the HTTP app listens on
```
"""
