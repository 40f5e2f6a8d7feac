"""The allocator setting: importing hilovit changes nothing; the first model built switches glibc to keep freed
memory for reuse (tune_allocator); HILOVIT_NO_MALLOPT=1 makes it a no-op."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux only")

# In a fresh process: RSS growth left after a 256 MB tensor is freed, before and after a model is built.
_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import hilovit
    from hilovit import runtime

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def kept_after_free():
        base = rss()
        x = torch.ones(64 * 2**20)  # 256 MB, touched
        del x
        return rss() - base

    out = {"after_import": runtime._done, "kept_before": kept_after_free()}
    hilovit.create_model("litv2_nano")
    out["after_model"] = runtime._done
    out["kept_after"] = kept_after_free()
    out["tuned"] = runtime.tune_allocator()
    print(json.dumps(out))
    """
)


def _probe(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "HILOVIT_NO_MALLOPT"}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_a_model_tunes_the_allocator():
    out = _probe({})
    assert out["after_import"] is None, "importing hilovit must not change the allocator"
    # glibc's default hands a freed 256 MB block straight back to the system ...
    assert out["kept_before"] < 64 * 2**20
    assert out["after_model"] is True and out["tuned"] is True
    # ... once a model is built it stays with the process for the next pass.
    assert out["kept_after"] > 192 * 2**20


def test_opt_out_leaves_the_allocator_alone():
    out = _probe({"HILOVIT_NO_MALLOPT": "1"})
    assert out["after_model"] is False and out["tuned"] is False
    assert out["kept_after"] < 64 * 2**20
