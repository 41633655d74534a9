"""facematch.js verifyFaces against the real app over real HTTP (Node's fetch, real photos)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image
from werkzeug.serving import make_server

CLIENT = Path(__file__).resolve().parent.parent / "flask_backend" / "static" / "facematch.js"

SCRIPT = r"""
const FM = require(process.argv[2]);
const fs = require("fs");
const [baseUrl, a, b, c, blank] = process.argv.slice(3);
const blob = (p) => new Blob([fs.readFileSync(p)], { type: "image/jpeg" });
(async () => {
  const out = {};
  out.same = await FM.verifyFaces({ imageA: blob(a), imageB: blob(b), baseUrl });
  out.diff = await FM.verifyFaces({ imageA: blob(a), imageB: blob(c), baseUrl });
  out.v1 = await FM.verifyFaces({ imageA: blob(a), imageB: blob(b), baseUrl, space: "v1" });
  out.vector = await FM.verifyFaces({ imageA: blob(a), embeddingB: [0.5, 0.5], baseUrl })
    .catch((e) => ({ code: e.code, status: e.status }));
  try {
    await FM.verifyFaces({ imageA: blob(a), imageB: blob(blank), baseUrl });
  } catch (e) {
    out.noface = { code: e.code, status: e.status, image: e.image, via: e.via };
  }
  try {
    await FM.verifyFaces({ imageA: blob(a), baseUrl });
  } catch (e) {
    out.missing = { code: e.code };
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def test_verify_faces_in_node_against_the_real_app(live_url, faces_dir, tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        pytest.skip("node is not installed")
    blank = tmp_path / "blank.jpg"
    Image.linear_gradient("L").resize((320, 240)).convert("RGB").save(blank, "JPEG")
    args = [str(faces_dir / n) for n in ("obama__1.jpg", "obama__3.jpg", "biden__1.jpg")]
    proc = subprocess.run([node, "-", str(CLIENT), live_url, *args, str(blank)], input=SCRIPT, text=True,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["same"]["isMatch"] is True and out["same"]["via"] == "v2" and out["same"]["similarity"] > 0.4
    assert out["same"]["facesA"] == 1 and out["same"]["faceA"]["quality"]["size_px"] > 100
    assert out["diff"]["isMatch"] is False and out["diff"]["similarity"] < 0.4
    assert out["v1"]["via"] == "v1" and out["v1"]["isMatch"] is True and out["v1"]["distance"] < 0.6
    assert out["vector"] == {"code": "dimension_mismatch", "status": 400}  # a vector side never falls back
    assert out["noface"] == {"code": "no_face", "status": 422, "image": "b", "via": "v2"}
    assert out["missing"] == {"code": "missing_image"}
