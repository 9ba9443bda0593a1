// The OpenAI Node.js SDK pointed at proxycast: a chat and a stream.
//
//   cd examples/node && npm install
//   PROXYCAST_URL=http://127.0.0.1:9090/v1 PROXYCAST_API_KEY=... node example.mjs
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.PROXYCAST_URL ?? "http://127.0.0.1:9090/v1",
  apiKey: process.env.PROXYCAST_API_KEY,
});
const model = process.env.MODEL ?? "claude-sonnet-4-20250514";

const response = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Hello! Who are you?" }],
});
console.log(response.choices[0].message.content);

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Count to five." }],
  stream: true,
});
let text = "";
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
}
console.log(text);
