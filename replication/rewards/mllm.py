"""The MLLM grader: the paper's five-aspect rubric over an OpenAI-compatible chat-completions API.

The paper scores images with GPT-4o: accuracy to the prompt, creativity, visual quality, consistency
and emotional resonance, 0-10 each, plus an overall score, answered as JSON (its Fig. 8). This
module keeps that protocol (the rubric below is our own wording) and talks to any endpoint that
serves `POST {base_url}/chat/completions` the way OpenAI's API does:

* `GraderClient`: base URL and model are parameters; the API key is read only from an environment
  variable (never from params, never logged); per-request timeouts; bounded retries with exponential
  backoff on network errors, HTTP 429/5xx and unreadable answers; concurrent requests; a request
  budget. An answer that still cannot be read after the retries raises `GraderParseError`: there is
  no default score (the released code silently scores 7.0).
* `LocalGrader`: the tiny world's MLLM. A stdlib HTTP server on 127.0.0.1 (a thread, started and
  stopped by the code that needs it) answering the same protocol. It decodes the image from its
  base64 PNG data URL, reads the prompt from the rubric text, and grades with `grade_world`, a fixed
  function of the world (below). Concurrent requests are graded together in one batch.
* `MLLMGrader`: the reward `mllm` (the overall score, 0-10) and the metric column `mllm`
  (overall / 10, on the 0-1 scale of the paper's table).

How the tiny world's grader scores each aspect (0-10; `world.rater` defines the measurements):
    accuracy     10 x alignment: share of the prompt's claims that hold (the scene parser)
    creativity   10 x crisp: share of the object colour drawn at full saturation (rendered detail;
                 the tiny world has no notion of originality, so this is a stand-in)
    quality      10 x the rater's quality (mean of crisp, clean, formed, pure)
    consistency  10 x (formed + pure) / 2: objects whole and single-coloured, no stray fragments
    emotion      10 x vividness: object saturation relative to the palette's (a stand-in as well)
    overall      0.4 x accuracy + 0.15 x each of the other four (the rubric weighs accuracy most)
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import numpy as np
import torch

from ..tensors import to_uint8

ASPECTS = ("accuracy", "creativity", "quality", "consistency", "emotion")
KEYS = ASPECTS + ("overall",)
OVERALL_WEIGHTS = {"accuracy": 0.4, "creativity": 0.15, "quality": 0.15, "consistency": 0.15, "emotion": 0.15}
LOCAL_MODEL = "tiny-world-grader"

SYSTEM_PROMPT = "You judge images made by text-to-image models. You reply with a single JSON object and nothing else."
RUBRIC = """Judge how well the attached image realises the prompt below. Give each aspect a score from 0 (very poor) to 10 (excellent):

- accuracy: everything the prompt asks for is there and right: objects, colours, shapes, textures, sizes, counts and positions;
- creativity: the image is imaginative and richly rendered rather than bare;
- quality: the image is sharp and clean, without blur, smudges or artifacts;
- consistency: the image hangs together: every object is whole, evenly coloured and patterned, with nothing stray;
- emotion: the image is vivid and draws the viewer in.

Then give an overall score from 0 to 10 in which accuracy counts most.

Prompt: "{prompt}"

Reply with JSON only, exactly these keys:
{"accuracy": <0-10>, "creativity": <0-10>, "quality": <0-10>, "consistency": <0-10>, "emotion": <0-10>, "overall": <0-10>, "reason": "<one short sentence>"}"""
_PROMPT_LINE = re.compile(r'^Prompt: "(.*)"$', re.M)


class GraderError(RuntimeError):
    """The grader could not be reached or refused the request; the message names the fix."""


class GraderParseError(GraderError):
    """The grader answered, but not with the rubric's JSON (after every retry)."""


class GraderBudgetError(GraderError):
    """The request budget (max_requests) is spent."""


def rubric_text(prompt: str) -> str:
    return RUBRIC.replace("{prompt}", prompt.replace('"', "'").replace("\n", " "))


def parse_grade(text: str) -> dict[str, float]:
    """The rubric's scores from an answer: the first JSON object in it (code fences allowed), with every key
    present and a number in [0, 10]. Anything else raises GraderParseError."""
    if not isinstance(text, str) or "{" not in text:
        raise GraderParseError(f"no JSON object in the grader's answer {str(text)[:120]!r}")
    start, end = text.index("{"), text.rfind("}")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as e:
        raise GraderParseError(
            f"unreadable JSON in the grader's answer ({e.msg}): {text[start : start + 120]!r}"
        ) from None
    if not isinstance(obj, dict):
        raise GraderParseError(f"the grader's answer is not a JSON object: {text[:120]!r}")
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise GraderParseError(f"the grader's answer lacks {missing}: {text[:160]!r}")
    out = {}
    for k in KEYS:
        v = obj[k]
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise GraderParseError(f"score {k!r} is not a number: {v!r}")
        try:
            v = float(v)
        except ValueError:
            raise GraderParseError(f"score {k!r} is not a number: {v!r}") from None
        if not (0.0 <= v <= 10.0) or v != v:
            raise GraderParseError(f"score {k!r} = {v} is outside 0-10")
        out[k] = v
    return out


def png_data_url(image: np.ndarray) -> str:
    """A (H, W, 3) uint8 image as a base64 PNG data URL (how the OpenAI API takes inline images)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_data_url(url: str) -> np.ndarray:
    from PIL import Image

    head, _, payload = url.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        raise ValueError("images must be base64 data URLs (data:image/png;base64,...)")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"), dtype=np.uint8)


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


# ----------------------------------------------------------------------------- the client
@dataclass
class MLLMParams:
    """The grader's settings (params.yaml: mllm). base_url 'local' starts the tiny world's grader on 127.0.0.1;
    otherwise any OpenAI-compatible endpoint, its key read from the environment variable `api_key_env` (never
    written to params.yaml)."""

    base_url: str = "local"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    concurrency: int = 8
    max_requests: int = 100_000


class GraderClient:
    """Grades images through `POST {base_url}/chat/completions` (one image per request, several in flight)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = MLLMParams.api_key_env,
        timeout: float = MLLMParams.timeout,
        max_retries: int = MLLMParams.max_retries,
        backoff: float = MLLMParams.backoff,
        concurrency: int = MLLMParams.concurrency,
        max_requests: int = MLLMParams.max_requests,
        temperature: float = 0.0,
        max_tokens: int = 300,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"mllm base_url must be an http(s) URL such as https://api.openai.com/v1, got {base_url!r}"
            )
        if max_retries < 0 or concurrency < 1 or max_requests < 1 or timeout <= 0:
            raise ValueError("mllm settings: need max_retries >= 0, concurrency >= 1, max_requests >= 1, timeout > 0")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key and not _is_loopback(base_url):
            raise GraderError(
                f"no API key for {base_url}: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
                f"(keys are read from the environment only, never from params.yaml)"
            )
        self._has_key = bool(key)  # the key itself stays in the environment; it is read per request
        self.timeout, self.max_retries, self.backoff = float(timeout), int(max_retries), float(backoff)
        self.concurrency, self.max_requests = int(concurrency), int(max_requests)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.requests_made = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return (
            f"GraderClient(base_url={self.base_url!r}, model={self.model!r}, key={'set' if self._has_key else 'none'})"
        )

    def _spend(self) -> None:
        with self._lock:
            if self.requests_made >= self.max_requests:
                raise GraderBudgetError(
                    f"the grader's request budget ({self.max_requests} requests) is spent; "
                    f"raise mllm.max_requests to grade more"
                )
            self.requests_made += 1

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = "Bearer " + key
        req = urllib.request.Request(
            self.base_url + "/chat/completions", data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode())

    def messages(self, image_url: str, prompt: str) -> list[dict]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": rubric_text(prompt)},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            },
        ]

    def grade_one(self, image_url: str, prompt: str) -> dict[str, float]:
        payload = {
            "model": self.model,
            "messages": self.messages(image_url, prompt),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._spend()
            try:
                answer = self._post(payload)
                return parse_grade(answer["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise GraderError(
                        f"the grader at {self.base_url} refused the request (HTTP {e.code}): check the "
                        f"API key in the environment variable {self.api_key_env}"
                    ) from None
                if e.code not in (408, 409, 429) and e.code < 500:
                    raise GraderError(
                        f"the grader at {self.base_url} rejected the request (HTTP {e.code}: "
                        f"{_error_text(e)}); check mllm.model ({self.model!r}) and mllm.base_url"
                    ) from None
                last = GraderError(f"HTTP {e.code}")
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = GraderError(f"{type(e).__name__}: {getattr(e, 'reason', e)}")
            except GraderParseError as e:
                last = e
            except (KeyError, IndexError, TypeError, ValueError) as e:
                last = GraderParseError(f"malformed chat-completions response ({type(e).__name__}: {e})")
        if isinstance(last, GraderParseError):
            raise GraderParseError(
                f"the grader's answer could not be read as the rubric's JSON after "
                f"{self.max_retries + 1} attempts (no default score is used): {last}"
            )
        raise GraderError(
            f"cannot reach the grader at {self.base_url} after {self.max_retries + 1} attempts "
            f"({last}); check mllm.base_url and that the server is up"
        )

    def grade(self, images: np.ndarray, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every key of the rubric for (N, H, W, 3) uint8 images; requests run `concurrency` at a time."""
        if len(images) != len(prompts):
            raise ValueError(f"grader got {len(images)} images but {len(prompts)} prompts")
        if len(images) == 0:
            return {k: np.zeros(0) for k in KEYS}
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(images))) as pool:
            urls = list(pool.map(png_data_url, list(images)))
            grades = list(pool.map(self.grade_one, urls, list(prompts)))
        return {k: np.array([g[k] for g in grades], dtype=np.float64) for k in KEYS}


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        return json.loads(e.read().decode())["error"]["message"][:200]
    except Exception:  # noqa: BLE001 - best effort: any body
        return e.reason if isinstance(e.reason, str) else "no message"


# ----------------------------------------------------------------------------- the tiny world's grader
def grade_world(images, prompts: Sequence) -> dict[str, np.ndarray]:
    """The tiny world's rubric scores (0-10) of images against prompts (strings, Specs or spec dicts)."""
    from ..world import rater

    view = rater.judge(images, prompts)
    scores = {
        "accuracy": view.alignment,
        "creativity": view.crisp,
        "quality": view.quality,
        "consistency": (view.formed + view.pure) / 2,
        "emotion": rater.vividness(images),
    }
    out = {k: np.round(10 * v.numpy().astype(np.float64), 2) for k, v in scores.items()}
    out["overall"] = np.round(sum(w * out[k] for k, w in OVERALL_WEIGHTS.items()), 2)
    return out


class _Batcher:
    """Grades the requests that arrive together in one batched call (one worker thread)."""

    def __init__(self, wait: float = 0.003, max_batch: int = 256):
        self.q: queue.Queue = queue.Queue()
        self.wait, self.max_batch = wait, max_batch
        self.thread = threading.Thread(target=self._run, daemon=True, name="local-grader-batcher")
        self.thread.start()

    def grade(self, image: np.ndarray, prompt: str) -> dict[str, float]:
        slot = {"image": image, "prompt": prompt, "done": threading.Event()}
        self.q.put(slot)
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def stop(self) -> None:
        self.q.put(None)

    def _run(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.max_batch:
                try:
                    item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self.q.put(None)
                    break
                batch.append(item)
            self._grade(batch)

    @staticmethod
    def _grade(batch: list[dict]) -> None:
        from ..world.caption import PromptError, parse_prompt

        ok = []
        for slot in batch:
            try:
                slot["spec"] = parse_prompt(slot["prompt"])
                ok.append(slot)
            except PromptError as e:
                slot["error"] = ValueError(f"the tiny world's grader only knows the world's prompts: {e}")
                slot["done"].set()
        if ok:
            try:
                sizes = {s["image"].shape for s in ok}
                if len(sizes) != 1:  # different sizes cannot share a batch: grade one at a time
                    results = [grade_world(s["image"][None], [s["spec"]]) for s in ok]
                    scores = [{k: float(r[k][0]) for k in KEYS} for r in results]
                else:
                    r = grade_world(np.stack([s["image"] for s in ok]), [s["spec"] for s in ok])
                    scores = [{k: float(r[k][i]) for k in KEYS} for i in range(len(ok))]
                for slot, sc in zip(ok, scores):
                    slot["result"] = sc
            except Exception as e:  # noqa: BLE001 - reported to every waiting request
                for slot in ok:
                    slot["error"] = e
            for slot in ok:
                slot["done"].set()


class LocalGrader:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that grades with `grade_world`.

    `with LocalGrader() as g: GraderClient(g.base_url, g.model)`; port 0 picks a free port. With
    `api_key`, requests must carry `Authorization: Bearer <api_key>` (to test clients' key handling).
    """

    def __init__(self, port: int = 0, api_key: str | None = None, model: str = LOCAL_MODEL, reply_override=None):
        self.port, self.model = port, model
        self._api_key = api_key
        self.reply_override = reply_override  # tests: fn(n) -> answer text or HTTP status, to simulate faults
        self.calls = 0
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        if self.server is None:
            raise RuntimeError("the local grader is not running: call start() (or use it as a context manager)")
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> LocalGrader:
        if self.server is not None:
            return self
        grader, batcher = self, _Batcher()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # no per-request lines on stderr
                pass

            def _send(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"unknown path {self.path}"}})
                if grader._api_key and self.headers.get("Authorization") != f"Bearer {grader._api_key}":
                    return self._send(401, {"error": {"message": "invalid API key"}})
                with grader._lock:
                    grader.calls += 1
                    n = grader.calls
                if grader.reply_override is not None:
                    fault = grader.reply_override(n)
                    if isinstance(fault, int):
                        return self._send(fault, {"error": {"message": "simulated fault"}})
                    if isinstance(fault, str):
                        return self._send(200, _completion(grader.model, fault))
                try:
                    req = json.loads(raw.decode())
                    user = next(m for m in req["messages"] if m.get("role") == "user")
                    parts = (
                        user["content"]
                        if isinstance(user["content"], list)
                        else [{"type": "text", "text": user["content"]}]
                    )
                    text = " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
                    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
                    m = _PROMPT_LINE.search(text)
                    if m is None or len(urls) != 1:
                        raise ValueError('the message needs the rubric with a line Prompt: "..." and exactly one image')
                    scores = batcher.grade(decode_data_url(urls[0]), m.group(1))
                except (ValueError, KeyError, StopIteration, TypeError, json.JSONDecodeError) as e:
                    return self._send(400, {"error": {"message": str(e) or type(e).__name__}})
                reason = "accuracy {accuracy:.1f}, quality {quality:.1f}".format(**scores)
                return self._send(200, _completion(grader.model, json.dumps({**scores, "reason": reason})))

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._batcher = batcher
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="local-grader")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self._batcher.stop()
            self.server = None

    def __enter__(self) -> LocalGrader:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _completion(model: str, content: str) -> dict:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


# ----------------------------------------------------------------------------- the reward and metric
class MLLMGrader:
    """reward(images, prompts) -> the grader's overall score (0-10). `grade` returns every rubric key;
    the metric column `mllm` is overall / 10."""

    name = "mllm"

    def __init__(self, client: GraderClient, server: LocalGrader | None = None):
        self.client, self.server = client, server
        self._finalizer = weakref.finalize(self, server.stop) if server is not None else None

    @classmethod
    def load(cls, source="local", device=None, **settings) -> MLLMGrader:
        """source 'local' (the tiny world's grader, started here on a free loopback port), or
        'MODEL@BASE_URL' (e.g. 'gpt-4o@https://api.openai.com/v1'), or a mapping of GraderClient
        settings (base_url 'local' allowed). The key comes from the environment (api_key_env)."""
        if isinstance(source, dict) or hasattr(source, "__dataclass_fields__"):
            settings = {**(source if isinstance(source, dict) else vars(source)), **settings}
            source = settings.pop("base_url", "local")
            if source != "local":
                source = f"{settings.pop('model', 'gpt-4o')}@{source}"
            else:
                settings.pop("model", None)
        if source == "local":
            server = LocalGrader().start()
            settings = {k: v for k, v in settings.items() if k != "api_key_env"}
            return cls(GraderClient(server.base_url, server.model, api_key_env=None, **settings), server)
        model, at, url = str(source).partition("@")
        if not at:
            raise ValueError(
                f"mllm source {source!r}: use 'local' or 'MODEL@BASE_URL' (e.g. gpt-4o@https://api.openai.com/v1)"
            )
        return cls(GraderClient(url, model, **settings))

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def grade(self, images, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        from ..world.parser import as_float_images
        from .base import check_batch

        if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
            check_batch(images, prompts)
        else:
            images = as_float_images(images)
        return self.client.grade(to_uint8(images), list(prompts))

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        overall = self.grade(images, prompts)["overall"]
        device = images.device if isinstance(images, torch.Tensor) else "cpu"
        return torch.tensor(overall, dtype=torch.float32, device=device)


__all__ = [
    "MLLMGrader",
    "GraderClient",
    "LocalGrader",
    "GraderError",
    "GraderParseError",
    "GraderBudgetError",
    "grade_world",
    "parse_grade",
    "rubric_text",
    "png_data_url",
    "ASPECTS",
    "KEYS",
    "RUBRIC",
    "SYSTEM_PROMPT",
]
