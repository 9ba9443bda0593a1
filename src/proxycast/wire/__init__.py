"""attrs declarations of each wire format; one module per format, converters beside the classes."""
