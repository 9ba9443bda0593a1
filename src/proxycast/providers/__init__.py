"""Provider adapters: all of proxycast's I/O towards upstreams (httpx), one module per upstream kind."""
