"""Graph: fan-out, fan-in, taps, validation errors, latency budget, Mermaid."""

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from pipeline import CallContext, ConfigError, Graph, Processor, VirtualClock, build_graph, load_pipeline, run_call
from pipeline.frames import EndOfStream, FinalTranscript, InputAudio, LLMToken, OutputAudio, TTSText
from pipeline.testing import Collector, Feeder


class Words(Processor):
    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    latency = (5.0, 20.0)

    async def process(self, frame: FinalTranscript) -> None:
        for word in frame.text.split():
            await self.push(LLMToken(word, turn=frame.turn))


async def test_fan_out_every_consumer_gets_every_frame_in_order() -> None:
    a, b = Collector(name="a"), Collector(name="b")
    graph = Graph()
    graph.chain(Feeder([FinalTranscript("one two three", turn=1)]), Words(name="w"), a)
    graph.add(b)
    graph.link("w", "b")
    result = await run_call(graph, timeout=5)
    assert result.reason == "eos"
    assert [f.text for f in a.frames] == ["one", "two", "three"]
    assert [f.text for f in b.frames] == ["one", "two", "three"]
    assert isinstance(a.controls[-1], EndOfStream) and isinstance(b.controls[-1], EndOfStream)


async def test_fan_in_one_consumer_gets_both_branches() -> None:
    sink = Collector()
    graph = Graph()
    graph.add(Feeder([FinalTranscript("x", turn=1)], name="f1"))
    graph.add(Feeder([FinalTranscript("y", turn=2), FinalTranscript("z", turn=3)], name="f2"))
    graph.add(sink)
    graph.link("f1", "collector")
    graph.link("f2", "collector")
    result = await run_call(graph, timeout=5)
    assert result.reason == "eos"
    assert sorted(f.text for f in sink.frames) == ["x", "y", "z"]
    assert sum(isinstance(c, EndOfStream) for c in sink.controls) == 2


class SlowTap(Processor):
    consumes = (LLMToken,)

    def __init__(self) -> None:
        super().__init__(name="slowtap")
        self.release = asyncio.Event()
        self.got: list[str] = []

    async def process(self, frame: LLMToken) -> None:
        await self.release.wait()
        self.got.append(frame.text)


async def test_a_slow_tap_never_delays_the_main_path() -> None:
    n = 1000
    sink = Collector()
    tap = SlowTap()
    main_done = asyncio.Event()

    class Watch(Collector):
        async def on_control(self, frame) -> None:  # type: ignore[no-untyped-def]
            await super().on_control(frame)
            if isinstance(frame, EndOfStream):
                main_done.set()

    sink = Watch()
    source = Feeder([LLMToken(str(i), turn=1) for i in range(n)])
    graph = Graph()
    graph.chain(source, sink)
    graph.tap(source, tap, maxsize=8, overflow="drop_oldest")
    task = asyncio.create_task(run_call(graph, timeout=10))
    await main_done.wait()
    # The main path finished all 1000 frames while the tap had processed none.
    assert len(sink.frames) == n and tap.got == []
    assert tap._queue is not None and tap._queue.dropped == n - 8
    tap.release.set()
    result = await task
    assert result.reason == "eos"
    # The tap kept the newest 8 data frames (the oldest were dropped) and still saw EOS.
    assert tap.got == [str(i) for i in range(n - 8, n)]


async def test_tap_drop_newest_keeps_the_first_frames() -> None:
    tap = SlowTap()
    source = Feeder([LLMToken(str(i), turn=1) for i in range(20)])
    graph = Graph()
    graph.chain(source, Collector())
    graph.tap(source, tap, maxsize=4, overflow="drop_newest")
    task = asyncio.create_task(run_call(graph, timeout=10))
    for _ in range(5):
        await asyncio.sleep(0)
    tap.release.set()
    await task
    assert tap.got == ["0", "1", "2", "3"]


def _graph(*names: str) -> Graph:
    graph = Graph("g", file="pipes/g.yaml")
    for name in names:
        graph.add(Words(name=name))
    return graph


def test_cycle_is_a_config_error_naming_nodes() -> None:
    graph = _graph("a", "b")
    graph.link("a", "b")
    graph.link("b", "a")
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        graph.validate()


def test_dangling_node_and_unknown_edge_end() -> None:
    graph = _graph("a", "b", "lonely")
    graph.link("a", "b")
    with pytest.raises(ConfigError, match="node 'lonely': dangling node"):
        graph.validate()
    graph = _graph("a")
    graph.link("a", "ghost", line=7)
    with pytest.raises(ConfigError, match=r"pipes/g.yaml:7: node 'ghost': .*unknown node 'ghost'"):
        graph.validate()


def test_type_mismatch_names_both_nodes() -> None:
    class Tts(Processor):
        consumes = (TTSText,)
        produces = (OutputAudio,)

    class Src(Processor):
        produces = (FinalTranscript,)

    graph = Graph("g", file="p.yaml")
    graph.add(Src(name="src"))
    graph.add(Words(name="words"))
    graph.add(Tts(name="tts"), line=12)
    graph.link("src", "words")
    graph.link("words", "tts")
    with pytest.raises(ConfigError) as info:
        graph.validate()
    assert info.value.node == "tts" and info.value.line == 12
    assert "'tts' consumes TTSText but 'words' emits" in str(info.value)
    assert "LLMToken" in str(info.value)


def test_pass_through_types_flow_to_later_nodes() -> None:
    class Audio(Processor):
        produces = (InputAudio, FinalTranscript)

        async def run(self) -> None:
            pass

    class Speaker(Processor):
        consumes = (InputAudio,)

    graph = Graph()
    graph.chain(Audio(name="src"), Words(name="w"), Speaker(name="spk"))
    graph.validate()  # InputAudio passes through 'w' untouched, so spk is satisfied


def test_duplex_transport_round_trip_is_not_a_cycle_and_budget_sums() -> None:
    class Caller(Processor):
        duplex = True
        consumes = (LLMToken,)
        produces = (FinalTranscript,)
        latency = (20.0, 40.0)

        async def run(self) -> None:  # a source: a graph without one is refused
            pass

    graph = Graph()
    graph.add(Caller(name="caller"))
    graph.add(Words(name="brain"))
    graph.chain("caller", "brain", "caller")
    graph.validate()
    assert [p.path for p in graph.latency_budget()] == [("caller", "brain", "caller")]
    budget = graph.latency_budget()[0]
    assert (budget.min_ms, budget.max_ms) == (45.0, 100.0)  # 20+5+20, 40+20+40
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("flowchart LR\n")
    assert "caller --> brain" in mermaid and "brain --> caller" in mermaid


def test_tap_into_duplex_and_tap_target_on_main_path_are_rejected() -> None:
    graph = _graph("a", "b", "c")
    graph.link("a", "b")
    graph.tap("a", "c")
    graph.link("b", "c")
    with pytest.raises(ConfigError, match="tap target cannot also be linked"):
        graph.validate()


def test_duplicate_names_and_rewiring_are_rejected() -> None:
    graph = _graph("a")
    with pytest.raises(ConfigError, match="duplicate node name 'a'"):
        graph.add(Words(name="a"))


async def test_probes_and_taps_see_frames_a_node_passes_through_untouched() -> None:
    seen: list[str] = []
    tap = Collector(name="tap")
    node = Words(name="w")  # consumes FinalTranscript; InputAudio passes through it
    graph = Graph()
    graph.chain(Feeder([InputAudio(b"\x00\x00"), FinalTranscript("a b", turn=1)]), node, Collector())
    graph.tap(node, tap)
    graph.probe("w", lambda f: seen.append(type(f).__name__))
    await run_call(graph, timeout=5)
    assert seen == ["InputAudio", "LLMToken", "LLMToken", "EndOfStream"]
    assert [type(f).__name__ for f in tap.frames] == ["InputAudio", "LLMToken", "LLMToken"]


# --- graphs whose calls could never end (issue 12, defect 4) -----------------------------


class Src(Processor):
    produces = (FinalTranscript,)

    async def run(self) -> None:
        pass


class Hop(Processor):
    consumes = (FinalTranscript,)
    produces = (FinalTranscript,)


def test_a_lone_node_from_yaml_is_refused_with_file_line_and_node(tmp_path: Path) -> None:
    path = tmp_path / "lone.yaml"
    path.write_text("name: lone\nnodes:\n  caller: {use: text_caller}\n")
    with pytest.raises(ConfigError) as info:
        build_graph(load_pipeline(path, env={}))
    assert str(info.value) == (f"{path}:3: node 'caller': dangling node: no edge reaches it or leaves it, "
                               "so a call through it could never end")


async def test_a_lone_source_is_refused_before_the_call_instead_of_hanging() -> None:
    graph = Graph("g")
    graph.add(Feeder([FinalTranscript("x", turn=1)]))
    clock = VirtualClock()
    call = asyncio.create_task(run_call(graph, CallContext(clock=clock), timeout=3600))
    await clock.advance(0)  # the call starts (and used to park on its timeout)
    await clock.advance(3600 * 10**9)  # it used to run until this timeout, then end "timeout"
    with pytest.raises(ConfigError, match="node 'feeder': dangling node"):
        await call


def test_a_graph_without_a_source_is_refused() -> None:
    graph = Graph("g", file="pipes/g.yaml")
    graph.chain(Hop(name="a"), Hop(name="b"))
    with pytest.raises(ConfigError) as info:
        graph.validate()
    assert str(info.value) == ("pipes/g.yaml: no source: no node produces frames of its own (a caller transport "
                               "or a player), so a call could never start or end")


def test_a_sink_no_source_reaches_is_refused() -> None:
    graph = Graph("g", file="g.yaml")
    graph.add(Src(name="src"), line=2)
    graph.add(Hop(name="a"), line=3)
    graph.add(Hop(name="orphan_in"), line=4)
    graph.add(Hop(name="orphan_out"), line=5)
    graph.link("src", "a")
    graph.link("orphan_in", "orphan_out")  # nothing feeds orphan_in: orphan_out never gets EOS
    with pytest.raises(ConfigError) as info:
        graph.validate()
    assert (info.value.node, info.value.line) == ("orphan_out", 5)
    assert "'orphan_out' never gets end of stream: no source (src) reaches it" in str(info.value)


def test_a_source_whose_only_edge_is_a_tap_is_itself_a_sink_that_never_ends() -> None:
    graph = Graph("g")
    graph.add(Src(name="src"))
    graph.tap("src", Collector(name="log"))
    with pytest.raises(ConfigError, match="node 'src': 'src' never gets end of stream"):
        graph.validate()


def test_end_of_stream_does_not_flow_through_a_duplex_node_that_is_no_source() -> None:
    class Phone(Processor):  # duplex, but produces nothing of its own
        duplex = True
        consumes = (LLMToken,)
        produces = (FinalTranscript,)

    graph = Graph("g")
    graph.add(Src(name="src"))
    graph.add(Collector(name="sink"))
    graph.add(Phone(name="phone"))
    graph.add(Words(name="w"))
    graph.link("src", "sink")
    graph.chain("phone", "w", "phone")
    with pytest.raises(ConfigError, match="node 'phone': 'phone' never gets end of stream"):
        graph.validate()


# --- size: building and validation are linear (defect 3) ---------------------------------


def _chain(n: int) -> Graph:
    graph = Graph("chain")
    graph.add(Src(name="n0"))
    for i in range(1, n):
        graph.add(Hop(name=f"n{i}"))
        graph.link(f"n{i - 1}", f"n{i}")
    return graph


def _lines_run_in_graph_module(fn: Callable[[], object]) -> int:
    """Count the lines of pipeline/graph.py executed by ``fn``: an operation count that,
    unlike a timing, is the same on every machine and every run."""
    import pipeline.graph as module

    target = module.__file__
    count = 0

    def local(frame: FrameType, event: str, arg: object) -> object:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def global_(frame: FrameType, event: str, arg: object) -> object:
        return local if frame.f_code.co_filename == target else None

    sys.settrace(global_)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("shape", ["chain", "fan"])
def test_validation_work_grows_linearly_with_the_number_of_nodes(shape: str) -> None:
    def build(n: int) -> Graph:
        if shape == "chain":
            return _chain(n)
        graph = Graph("fan")  # one source feeding n-1 sinks: wide instead of deep
        graph.add(Src(name="src"))
        for i in range(1, n):
            graph.add(Collector(name=f"s{i}"))
            graph.link("src", f"s{i}")
        return graph

    counts = {}
    for n in (500, 1000, 2000):
        graph = build(n)
        counts[n] = _lines_run_in_graph_module(lambda g=graph: (g.validate(), g.topological_order()))  # type: ignore[misc]
    # Doubling the nodes doubles the work (quadratic code quadrupled it: 6,000 nodes took 15 s).
    assert counts[1000] / counts[500] < 2.1 and counts[2000] / counts[1000] < 2.1, counts
    assert counts[2000] < 150 * 2000, counts  # about a hundred lines per node, whatever the size


def test_twenty_thousand_chained_nodes_validate_in_order() -> None:
    n = 20_000
    graph = _chain(n)
    graph.validate()
    assert [node.name for node in graph.topological_order()] == [f"n{i}" for i in range(n)]
    (budget,) = graph.latency_budget()  # a path this long used to exhaust the stack
    assert len(budget.path) == n and budget.path[-1] == f"n{n - 1}"


def test_a_long_cycle_is_named_in_edge_order() -> None:
    graph = _graph(*[f"c{i}" for i in range(5000)])
    for i in range(5000):
        graph.link(f"c{i}", f"c{(i + 1) % 5000}")
    with pytest.raises(ConfigError) as info:
        graph.validate()
    message = str(info.value)
    assert message.startswith("pipes/g.yaml: node 'c0': cycle: c0 -> c1 -> c2 -> ")
    assert message.endswith("-> c4999 -> c0")


def test_a_tap_joined_and_left_during_a_call_keeps_the_edge_indexes_in_step() -> None:
    graph = Graph("g")
    graph.chain(Src(name="src"), Hop(name="hop"), Collector(name="sink"))
    graph.wire(CallContext(clock=VirtualClock()))
    late = Collector(name="late")
    graph.join_tap("hop", late)
    assert graph.successors("hop") == ["sink", "late"] and graph.predecessors("late") == ["hop"]
    graph.leave_tap(late)
    assert graph.successors("hop") == ["sink"] and graph.predecessors("late") == []
    assert [(e.src, e.dst) for e in graph.edges] == [("src", "hop"), ("hop", "sink")]


def test_a_wired_node_knows_its_feeders_and_a_tap_is_not_one() -> None:
    graph = Graph("g")
    src, hop, sink = Src(name="src"), Hop(name="hop"), Collector(name="sink")
    other = Src(name="other")
    graph.add(other)
    graph.chain(src, hop, sink)
    graph.link(other, hop)
    tap = Collector(name="tap")
    graph.tap(hop, tap)
    assert hop.feeders() == []  # not wired for a call yet
    graph.wire(CallContext(clock=VirtualClock()))
    assert hop.feeders() == [src, other] and sink.feeders() == [hop] and src.feeders() == []
    assert tap.feeders() == []  # a tap only watches: it pushes nothing back upstream
