"""Who used what: client keys, limits and usage records, prices, metrics, the access log, the live feed."""
