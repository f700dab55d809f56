"""uvcffi's transports: one module per asyncio transport kind, each on a libuv handle.

Every transport class is a real subclass of its asyncio base class (asyncio.Transport,
ReadTransport, WriteTransport, DatagramTransport, SubprocessTransport).
"""
