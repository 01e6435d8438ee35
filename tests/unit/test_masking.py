"""The masker: secrets become ``***`` wherever the chunks are cut, and no byte of any
occurrence of a secret shows, however the secrets overlap."""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

from hydra.agent.attempt import OutputStream
from hydra.agent.masking import OutputMasker, StreamMasker, mask_outputs, mask_text


def reference(text: bytes, secrets: list[bytes]) -> bytes:
    """Every byte covered by an occurrence of a secret masked; each masked run one ***."""
    covered = [False] * len(text)
    for secret in filter(None, secrets):
        for start in range(len(text) - len(secret) + 1):
            if text[start : start + len(secret)] == secret:
                covered[start : start + len(secret)] = [True] * len(secret)
    shown = bytearray()
    for position, byte in enumerate(text):
        if not covered[position]:
            shown.append(byte)
        elif position == 0 or not covered[position - 1]:
            shown += b"***"
    return bytes(shown)


def streamed(chunks: list[bytes], secrets: list[bytes]) -> bytes:
    masker = StreamMasker(secrets)
    return b"".join(masker.feed(chunk) for chunk in chunks) + masker.flush()


def splits(text: bytes, points: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


CASES = [
    (b"password is hunter2, again hunter2.", [b"hunter2"]),
    (b"abcdef", [b"abcd", b"cdef"]),  # overlapping: nothing of either shows
    (b"abc then abcdef then abcde", [b"abc", b"abcdef"]),  # a prefix of another
    (b"xababababy", [b"abab"]),  # overlapping occurrences of one secret
    (b"aaaaaaa", [b"aa"]),
    (b"s3cr3ts3cr3t", [b"s3cr3t"]),  # adjacent occurrences: one run
    (b"no secret here at all", [b"hunter2"]),
    (b"ab", [b"abc"]),  # a partial match at the very end is shown at the end
    (b"\xff\xfe secret \x00 bytes", [b"\xfe secret \x00"]),
]


@pytest.mark.parametrize(("text", "secrets"), CASES)
def test_every_single_and_double_split_point_gives_the_unsplit_answer(
    text: bytes, secrets: list[bytes]
) -> None:
    expected = reference(text, secrets)
    for count in (0, 1, 2):
        for points in itertools.combinations(range(1, len(text)), count):
            assert streamed(splits(text, points), secrets) == expected, points


def test_byte_by_byte() -> None:
    for text, secrets in CASES:
        assert streamed([bytes([b]) for b in text], secrets) == reference(text, secrets)


def test_random_texts_secrets_and_cuts_against_the_reference() -> None:
    rng = random.Random(12)
    for _ in range(3000):
        alphabet = b"ab" if rng.random() < 0.5 else b"abc"
        secrets = [
            bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(1, 3))
        ]
        text = bytes(rng.choice(alphabet + b"x") for _ in range(rng.randint(0, 30)))
        cuts = range(1, len(text))
        points = tuple(sorted(rng.sample(cuts, min(3, len(cuts)))))
        chunks = splits(text, points)
        assert streamed(chunks, secrets) == reference(text, secrets), (text, secrets, chunks)


def test_nothing_of_a_secret_is_shown_before_it_is_known_not_to_be_one() -> None:
    masker = StreamMasker([b"hunter2"])
    assert masker.feed(b"pass: hun") == b"pass: "  # "hun" may be the start of it
    assert masker.feed(b"ter") == b""
    assert masker.feed(b"2 ok") == b"*** ok"
    assert masker.feed(b" hunt") == b" "
    assert masker.flush() == b"hunt"  # the stream ended: it was not one


def test_held_back_bytes_are_bounded_by_the_longest_secret() -> None:
    masker = StreamMasker([b"abcdefgh"])
    shown = masker.feed(b"x" * 100_000 + b"abcdefg")
    assert shown == b"x" * 100_000
    assert masker.feed(b"a" * 100_000)[:3] == b"abc"


def test_a_long_masked_run_is_not_held_back() -> None:
    masker = StreamMasker([b"aa"])
    assert masker.feed(b"a" * 1000) == b"***"
    assert masker.feed(b"a" * 1000) == b""  # the same run goes on
    assert masker.feed(b"b") == b"b"
    assert masker.flush() == b""


def test_no_secrets_passes_everything_through() -> None:
    masker = StreamMasker([b""])
    assert masker.feed(b"abc") == b"abc"
    assert masker.flush() == b""


def test_output_masker_keeps_the_streams_apart() -> None:
    seen: list[tuple[OutputStream, bytes]] = []
    masker = OutputMasker([b"topsecret"], lambda stream, data: seen.append((stream, data)))
    masker.add(OutputStream.STDOUT, b"top")
    masker.add(OutputStream.STDERR, b"secret")  # not the rest of stdout's "top"
    masker.add(OutputStream.STDOUT, b"secret!")
    masker.flush()
    out = b"".join(data for stream, data in seen if stream is OutputStream.STDOUT)
    err = b"".join(data for stream, data in seen if stream is OutputStream.STDERR)
    assert (out, err) == (b"***!", b"secret")


def test_mask_text_and_outputs() -> None:
    assert mask_text("db=hunter2;", ["hunter2"]) == "db=***;"
    outputs = json.dumps({"dsn": "u:hunter2@h", "hunter2": [1, "x"], "pin": 424242})
    masked = json.loads(mask_outputs(outputs, ["hunter2", "424242"]))
    assert masked == {"dsn": "u:***@h", "***": [1, "x"], "pin": "***"}
    unchanged = '{"a":  1}'
    assert mask_outputs(unchanged, ["hunter2"]) == unchanged


@pytest.mark.parametrize(
    ("secret", "chunk"),
    [(b"a" * 16384, b"a" * 65536), (b"ab" * 8000, b"ab" * 32768), (b"x" * 64, b"y" * 65536)],
)
def test_masking_stays_linear_for_self_overlapping_secrets(secret: bytes, chunk: bytes) -> None:
    masker = StreamMasker([secret, b"hunter2"])
    started = time.monotonic()
    shown = b"".join(masker.feed(chunk) for _ in range(16)) + masker.flush()
    assert time.monotonic() - started < 5  # quadratic took close to a minute
    assert shown == (b"***" if chunk.startswith(secret[:2]) else chunk * 16)
