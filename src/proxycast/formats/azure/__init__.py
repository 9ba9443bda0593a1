"""Azure OpenAI: the OpenAI format at a deployment's URL, with an ``api-key`` or Entra ID tokens."""
