"""AWS Bedrock upstreams: the Converse API for every model, InvokeModel for Anthropic models."""
