"""The bare FastAPI app `make bench` measures the gateway against: same venv, same server,
nothing but routing and JSON parsing.

    python -m uvicorn mailstack_bench.bench_app:app --port P
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/emails", status_code=202)
async def accept(request: Request) -> JSONResponse:
    body: Any = await request.json()
    return JSONResponse({"received": len(body)}, status_code=202)
