"""Generated protobuf types for feedgate protocol version 1 (from proto/feedgate/v1/feedgate.proto).

`feedgate_pb2` is written by `clients/python/generate.py`; never edit it by hand.
"""
