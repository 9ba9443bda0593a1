"""Pure, synchronous conversions between each wire format and the internal model (``models``).

One module per format, with the same function names in each: ``request_to_internal``,
``request_from_internal``, ``response_to_internal``, ``response_from_internal``, and the stream
decoders and encoders.
"""
