"""Turn latency through the Python client's framework adapters against a
local convo-local (in memory): one exchange written and the history read,
per turn, as an agent does it. Needs the client with its extras (./tests/run's
.venv has it):

    .venv/bin/python bench/adapter_latency.py target/release/convo-local
"""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/convo-local"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


port = free_port(); d = tempfile.mkdtemp()
srv = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}", "--in-memory", "--data-dir", d, "--appends-per-minute", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/health"); break
    except Exception:
        time.sleep(0.1)
token = subprocess.check_output([BIN, "token", "--sub", "lat", "--data-dir", d]).decode().strip()
from convo_client import ConvoClient, AsyncConvoClient
from convo_client.langchain import ConvoChatMessageHistory
from convo_client.openai_agents import ConvoSession
from langchain_core.messages import HumanMessage, AIMessage
text = "Can you tell me a story about a brave little dragon who learns to share her treasure with the others? " * 2
N = 60
res = {}
with ConvoClient(base, token) as c:
    h = ConvoChatMessageHistory(client=c, user_id="u-lc", agent_id="a")
    h.messages
    times = []
    for i in range(N):
        t = time.perf_counter()
        h.add_messages([HumanMessage(content=text[:200]), AIMessage(content=text[:200])])
        ctx = c.context(h.conversation_id, max_messages=20)
        times.append((time.perf_counter() - t) * 1000)
    res["langchain add_messages + context(20)"] = times
    times = []
    for i in range(N):
        t = time.perf_counter()
        h.add_messages([HumanMessage(content=text[:200]), AIMessage(content=text[:200])])
        msgs = h.messages
        times.append((time.perf_counter() - t) * 1000)
    res["langchain add_messages + messages (whole history, 122-240)"] = times
async def oa():
    async with AsyncConvoClient(base, token) as c:
        s = ConvoSession(client=c, user_id="u-oa", agent_id="a")
        await s.get_items()
        times = []
        for i in range(N):
            t = time.perf_counter()
            await s.add_items([{"role": "user", "content": text[:200]}, {"role": "assistant", "content": text[:200]}])
            await s.get_items(limit=20)
            times.append((time.perf_counter() - t) * 1000)
        res["openai-agents add_items + get_items(20)"] = times
asyncio.run(oa())
srv.terminate()
for k, v in res.items():
    v = sorted(v)
    print(f"{k}: median {statistics.median(v):.2f} ms, p90 {v[int(len(v)*0.9)]:.2f} ms over {len(v)} turns")
