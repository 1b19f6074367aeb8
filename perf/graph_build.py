"""Graph building and validation cost against the number of nodes.

Question
    Does building and validating a pipeline grow linearly with its size? Issue 12 found
    6,000 chained nodes taking 15 s to validate: the graph looked up each node's
    neighbours by scanning every edge, so validation was quadratic.

Method
    A chain ``src -> hop1 -> ... -> hopN`` (a source and pass-through nodes that consume
    and produce ``FinalTranscript``, so type propagation has work to do at every hop),
    built two ways and timed with ``perf_counter`` (best of ``--repeat`` runs):

    * code: ``Graph.add``/``link`` for every node, then ``validate()`` and
      ``topological_order()``;
    * YAML: the same chain written as a pipeline file, then ``load_pipeline`` (parse,
      check settings) and ``build_graph`` (instantiate, link, validate).

    ``.venv/bin/python perf/graph_build.py [--sizes 1000 2000 6000 20000] [--json PATH]``

    Run from another checkout (``cd /path/to/old && python /path/to/perf/graph_build.py``)
    to time that checkout's engine: the script imports ``pipeline`` from the current
    directory.

Result
    Python 3.11.7, 2 shared cores. "before" is the engine at a5e2205 (one run each; best
    of 3 would only lower the small sizes), "after" this one (best of 3), in seconds::

        nodes     code build+validate      YAML load+build
                  before     after         before     after
        1,000      0.10      0.007          0.19      0.09
        2,000      0.37      0.015          0.43      0.18
        6,000      4.1       0.047          3.1       0.57
       20,000     49.4       0.23          33.5       2.2

    Before, doubling the nodes roughly quadrupled the time (each neighbour lookup scanned
    every edge). Now the graph keeps each node's incoming and outgoing edges as they are
    added and every check walks each edge a constant number of times: about 7 us per node
    in code, and 11 us at 20,000 (a bigger working set). Loading from YAML costs ~90 us
    per node, nearly all of it PyYAML's pure-Python parser with line tracking; a real
    pipeline has ten nodes and loads in about a millisecond. The test suite checks the
    linearity by counting executed lines, not by timing (tests/pipeline/test_graph.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))  # time the engine of the checkout we are run from

from pipeline import Graph, Processor, Registry, build_graph, load_pipeline
from pipeline.frames import FinalTranscript


class Src(Processor):
    """A source of transcripts (its run() is never called here)."""

    produces = (FinalTranscript,)

    async def run(self) -> None:
        return None


class Hop(Processor):
    """Consumes and produces transcripts: one step of type propagation per hop."""

    consumes = (FinalTranscript,)
    produces = (FinalTranscript,)


def chain_in_code(n: int) -> float:
    started = time.perf_counter()
    graph = Graph("chain")
    graph.add(Src(name="src"))
    prev = "src"
    for i in range(1, n):
        name = f"hop{i}"
        graph.add(Hop(name=name))
        graph.link(prev, name)
        prev = name
    graph.validate()
    assert len(graph.topological_order()) == n
    return time.perf_counter() - started


def chain_in_yaml(n: int, folder: Path) -> float:
    registry = Registry(group="voicegraph.perf-none")
    registry.register("src", Src)
    registry.register("hop", Hop)
    names = ["src"] + [f"hop{i}" for i in range(1, n)]
    lines = ["nodes:", "  src: {use: src}"] + [f"  {name}: {{use: hop}}" for name in names[1:]]
    lines += ["edges:", "  - " + " -> ".join(names)]
    path = folder / f"chain{n}.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    graph = build_graph(load_pipeline(path, registry=registry, env={}))
    elapsed = time.perf_counter() - started
    assert len(graph.nodes) == n
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 2000, 6000, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-yaml", action="store_true", help="time only the graph built in code")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            code = min(chain_in_code(n) for _ in range(args.repeat))
            yaml_s = None if args.no_yaml else min(chain_in_yaml(n, Path(tmp)) for _ in range(args.repeat))
            rows.append({"nodes": n, "code_s": round(code, 4), "yaml_s": None if yaml_s is None else round(yaml_s, 3)})
            per_node = code / n * 1e6
            yaml_txt = "-" if yaml_s is None else f"{yaml_s:.3f}"
            print(f"{n:>7} nodes: code {code:.4f} s ({per_node:.1f} us/node), YAML {yaml_txt} s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "graph_build", "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
