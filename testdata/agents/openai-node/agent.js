// A tiny agent written against the official `openai` package and nothing else:
// the client takes OPENAI_BASE_URL and OPENAI_API_KEY from the environment, as
// it would anywhere. It asks once without and once with streaming and prints
// one JSON line. (node_modules/openai is added when the project is assembled.)
'use strict';
const OpenAI = require('openai');

async function main() {
  const prompt = process.argv.slice(2).join(' ') || 'hello';
  const client = new OpenAI();
  const messages = [{ role: 'user', content: prompt }];
  const reply = await client.chat.completions.create({ model: 'gpt-4.1-mini', messages });
  const stream = await client.chat.completions.create({ model: 'gpt-4.1-mini', messages, stream: true });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
  console.log(JSON.stringify({ answer: reply.choices[0].message.content, streamed, node: process.version }));
}

main().catch((err) => {
  console.error(`agent failed: ${err.message}${err.cause ? ` (${err.cause.message ?? err.cause})` : ''}`);
  process.exit(1);
});
