"""The OpenAI Python SDK pointed at proxycast: a chat and a stream.

    PROXYCAST_URL=http://127.0.0.1:9090/v1 PROXYCAST_API_KEY=... MODEL=claude-sonnet-4-20250514 \
        python examples/python_example.py
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PROXYCAST_URL", "http://127.0.0.1:9090/v1"),
    api_key=os.environ["PROXYCAST_API_KEY"],
)
model = os.environ.get("MODEL", "claude-sonnet-4-20250514")

response = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Hello! Who are you?"}],
)
print(response.choices[0].message.content)

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to five."}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
