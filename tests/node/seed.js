// The seed post's Node.js agent, rewritten for the tests: executeClaudeCode(prompt) times one
// client.messages.create call with @anthropic-ai/sdk and prints one JSON line per execution with
// console.log, with the post's event and field names. claude-exporter ingests those lines
// (`serve --tail` on this program's stdout, or POST /v1/events).
//
//   node seed.js BASE_URL [COUNT]
//
// BASE_URL is the (fake) Anthropic API; COUNT executions run one after another (default 1). The exit
// status is the number of failed executions, capped at 100.
"use strict";

const { randomUUID } = require("node:crypto");
const { performance } = require("node:perf_hooks");
const Anthropic = require("@anthropic-ai/sdk");

const [baseURL, countArg] = process.argv.slice(2);
if (!baseURL) {
  console.error("usage: node seed.js BASE_URL [COUNT]");
  process.exit(64);
}

// No retries: each failed call is one error line, as the tests count them.
const client = new Anthropic({ baseURL, apiKey: "sk-ant-test-not-a-key", maxRetries: 0 });

async function executeClaudeCode(prompt) {
  const executionId = randomUUID();
  const started = performance.now();
  const elapsedMs = () => Math.round(performance.now() - started);
  try {
    const message = await client.messages.create({
      model: "claude-haiku-4-5",
      max_tokens: 1024,
      messages: [{ role: "user", content: `Run this task step by step:\n${prompt}` }],
    });
    console.log(
      JSON.stringify({
        event: "claude_execution_complete",
        execution_id: executionId,
        duration_ms: elapsedMs(),
        input_tokens: message.usage.input_tokens,
        output_tokens: message.usage.output_tokens,
        stop_reason: message.stop_reason,
        timestamp: new Date().toISOString(),
      }),
    );
    return message;
  } catch (error) {
    console.log(
      JSON.stringify({
        event: "claude_execution_error",
        execution_id: executionId,
        error_type: error.constructor.name,
        error_message: error.message,
        duration_ms: elapsedMs(),
      }),
    );
    throw error;
  }
}

async function main() {
  const count = Number.parseInt(countArg ?? "1", 10);
  let failed = 0;
  for (let i = 0; i < count; i += 1) {
    try {
      await executeClaudeCode(`task ${i + 1}: sum the numbers from 1 to ${10 * (i + 1)}`);
    } catch {
      failed += 1;
    }
  }
  process.exitCode = Math.min(failed, 100);
}

main();
