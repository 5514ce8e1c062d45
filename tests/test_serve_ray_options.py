"""`cascade serve --ray`'s options, refusals and the Ray Serve config file it writes (no cluster started)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_cli import cascade

from cascade.errors import CascadeError
from cascade.serve import ray_serve
from cascade.serve.ray_serve import RayServeOptions, check_store, load_options

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies" / "speculative-ngram.yaml"


def test_a_serve_section_and_flags_on_top(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("serve:\n  replicas: 3\n  num_cpus: 2\n  max_queued_requests: 100\n")
    o = load_options(f, {"replicas": None, "num_gpus": 0.5})
    assert (o.replicas, o.num_cpus, o.num_gpus, o.max_queued_requests) == (3, 2.0, 0.5, 100)
    assert load_options(f, {"replicas": 1}).replicas == 1  # a flag wins
    f.write_text("serve:\n  replica: 3\n")
    with pytest.raises(CascadeError, match=r"serve.yaml: bad Ray Serve options: replica: Extra inputs"):
        load_options(f, {})
    with pytest.raises(CascadeError, match="autoscale must be MIN,MAX"):
        load_options(None, {"autoscale": (3, 1)})
    with pytest.raises(CascadeError, match="cannot read the Ray Serve options"):
        load_options(tmp_path / "missing.yaml", {})


def test_sqlite_is_refused_for_several_replicas():
    with pytest.raises(CascadeError, match="SQLite is one file that 3 replica processes would write"):
        check_store("sqlite:///x.db", RayServeOptions(autoscale=(1, 3)))
    check_store("sqlite:///x.db", RayServeOptions(replicas=1))
    check_store("postgresql+psycopg://u@h/db", RayServeOptions(replicas=4))
    check_store(None, RayServeOptions(replicas=4))


def test_max_ongoing_requests_below_the_batch_is_refused():
    pytest.importorskip("ray.serve")
    with pytest.raises(CascadeError, match="max_ongoing_requests 4 is below --max-num-seqs 8"):
        ray_serve.application([POLICY], RayServeOptions(max_ongoing_requests=4), 8, 64, None)


def test_print_config_writes_a_file_ray_serve_builds():
    """`--print-config`: a Ray Serve config whose import path builds the same deployment (replicas, CPUs, the
    ongoing-request cap at least the batch) from its args."""
    pytest.importorskip("ray.serve")
    out = cascade(
        "serve", POLICY, "--ray", "--replicas", "2", "--num-cpus", "0.5", "--no-store", "--max-num-seqs", "4",
        "--print-config",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    (app,) = config["applications"]
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000} and app["route_prefix"] == "/"
    assert app["import_path"] == "cascade.serve.ray_serve:build"
    built = ray_serve.build(app["args"])
    deployment = built._bound_deployment
    assert deployment.num_replicas == 2 and deployment.ray_actor_options["num_cpus"] == 0.5
    assert deployment.max_ongoing_requests == 4 + 64
    auto = cascade("serve", POLICY, "--ray", "--autoscale", "1,3", "--no-store", "--print-config")
    built = ray_serve.build(yaml.safe_load(auto.stdout)["applications"][0]["args"])
    assert built._bound_deployment._deployment_config.autoscaling_config.max_replicas == 3


def test_bad_flags_are_clear_errors(tmp_path):
    out = cascade("serve", POLICY, "--ray", "--autoscale", "two", "--print-config")
    assert out.returncode != 0 and "--autoscale 'two': expected MIN,MAX" in out.stderr
    out = cascade("serve", POLICY, "--ray", "--replicas", "2", "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode != 0 and "SQLite is one file that 2 replica processes" in out.stderr
