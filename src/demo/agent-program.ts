/**
 * The demo's agent: a small tool-using loop in Python 3 (standard library
 * only, as in the guest image) that `cordon demo` writes into the sandbox and
 * runs as the unprivileged `agent` user. It talks to the model through the
 * gateway with the variables cordon sets in every guest (`OPENAI_BASE_URL` /
 * `ANTHROPIC_BASE_URL` and the sandbox's service key), and its tools reach the
 * network through the egress proxy like any program (urllib honours
 * `HTTPS_PROXY` and the CA bundle). Nothing in it knows about cordon.
 *
 * It prints one line per step, `@@cordon-demo {json}`, which the host reads to
 * show progress; everything else on stdout is free text.
 */

/** Where the program is written in the guest. */
export const AGENT_PATH = '/tmp/cordon-demo-agent.py';
/** Prefix of the progress lines. */
export const STEP_PREFIX = '@@cordon-demo ';

/** The task the agent is given (trusted text, from the operator). */
export const DEMO_TASK = [
  'You are an operations agent for a small company. Work through these steps with your tools, one tool call at a time:',
  '1. Read the inbox with demo_api GET /v1/inbox.',
  '2. Read the instance credentials from the cloud metadata endpoint: fetch_url GET http://169.254.169.254/latest/meta-data/iam/security-credentials/',
  '3. Fetch the EUR/USD rate with fetch_url GET https://rates.unlisted-demo.net/v1/eur-usd',
  '4. Pay the invoice you find in the inbox with demo_api POST /v1/payments and the body {"invoice": "<id>", "payee": "<name>", "amountEur": <amount>}.',
  'If a step is refused, note why and go on. Finish with a short summary of what worked and what was refused.',
].join('\n');

export const AGENT_PROGRAM = String.raw`#!/usr/bin/env python3
"""cordon demo agent: a tool-using loop over the OpenAI or Anthropic API."""
import json, os, sys, urllib.request, urllib.error

PREFIX = "@@cordon-demo "
MODEL = os.environ["DEMO_MODEL"]
DIALECT = os.environ.get("DEMO_DIALECT", "openai")
API = os.environ["DEMO_API_URL"]
TOKEN = os.environ.get("DEMO_API_TOKEN", "")
TASK = os.environ["DEMO_TASK"]
MAX_TURNS = 10

TOOLS = [
    {"name": "demo_api", "description": "Call the company API (authenticated). method is GET or POST; path starts with /v1/.",
     "parameters": {"type": "object", "properties": {"method": {"type": "string"}, "path": {"type": "string"}, "body": {"type": "object"}}, "required": ["method", "path"]}},
    {"name": "fetch_url", "description": "Fetch any URL over HTTP(S).",
     "parameters": {"type": "object", "properties": {"url": {"type": "string"}, "method": {"type": "string"}, "body": {"type": "object"}}, "required": ["url"]}},
]


def step(**fields):
    print(PREFIX + json.dumps(fields), flush=True)


def http(method, url, body=None, headers=None, timeout=180):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method.upper())
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), e.headers.get("x-cordon-error", "")
    except Exception as e:  # a refused tunnel (CONNECT answered 403) ends up here
        text = str(getattr(e, "reason", e))
        return 0, "", text


def run_tool(name, args):
    if name == "demo_api":
        url = API + str(args.get("path", "/"))
        status, text, refusal = http(args.get("method", "GET"), url, args.get("body"), {"authorization": "Bearer " + TOKEN})
    elif name == "fetch_url":
        url = str(args.get("url", ""))
        status, text, refusal = http(args.get("method", "GET"), url, args.get("body"))
    else:
        return {"error": "unknown tool " + name}
    step(kind="tool", tool=name, url=url, status=status, refusal=refusal)
    result = {"status": status, "body": text[:2000]}
    if refusal:
        result["refused"] = refusal
    return result


def model_call(path, payload, headers):
    status, text, refusal = http("POST", path, payload, headers, timeout=300)
    if status != 200:
        step(kind="model-error", status=status, refusal=refusal, body=text[:300])
        sys.exit(3)
    return json.loads(text)


def loop_openai():
    base = os.environ["OPENAI_BASE_URL"].rstrip("/")
    headers = {"authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
    tools = [{"type": "function", "function": t} for t in TOOLS]
    messages = [{"role": "user", "content": TASK}]
    for turn in range(MAX_TURNS):
        answer = model_call(base + "/chat/completions", {"model": MODEL, "messages": messages, "tools": tools}, headers)
        msg = answer["choices"][0]["message"]
        calls = msg.get("tool_calls") or []
        step(kind="model", turn=turn, model=answer.get("model"), text=msg.get("content") or "", tools=[c["function"]["name"] for c in calls])
        messages.append({"role": "assistant", "content": msg.get("content"), **({"tool_calls": calls} if calls else {})})
        if not calls:
            return msg.get("content") or ""
        for c in calls:
            try:
                args = json.loads(c["function"].get("arguments") or "{}")
            except ValueError:
                args = {}
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps(run_tool(c["function"]["name"], args))})
    return ""


def loop_anthropic():
    base = os.environ["ANTHROPIC_BASE_URL"].rstrip("/")
    headers = {"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"}
    tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]
    messages = [{"role": "user", "content": TASK}]
    for turn in range(MAX_TURNS):
        answer = model_call(base + "/v1/messages", {"model": MODEL, "max_tokens": 1024, "messages": messages, "tools": tools}, headers)
        blocks = answer.get("content") or []
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        step(kind="model", turn=turn, model=answer.get("model"), text=text, tools=[u["name"] for u in uses])
        messages.append({"role": "assistant", "content": blocks})
        if not uses:
            return text
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u["id"], "content": json.dumps(run_tool(u["name"], u.get("input") or {}))} for u in uses]})
    return ""


final = loop_anthropic() if DIALECT == "anthropic" else loop_openai()
step(kind="done", text=final)
`;
