"""The reference Philox stream, pinned against values printed by Triton 3.9's interpreter
(tl.randint4x), and the derived uniform / Gaussian / race-noise maps."""
import math

import torch

from fastflow.reference import philox

# (seed, offset) -> the four words of tl.randint4x(seed, offset), from TRITON_INTERPRET=1
PINNED = {
    (1234, 0): [546353992, 3665621163, 1140953199, 3419031310],
    (2**40 + 7, 2**33 + 5): [501852170, 1657283164, 3279296539, 3940596701],
    (-5, 3): [2067208600, 924934733, 1964424591, 2871492612],
}


def test_pinned_words():
    for (seed, offset), words in PINNED.items():
        got = philox.uint32_stream(seed, offset, 4)
        assert got.tolist() == words


def test_layout_element_i_uses_word_i_mod_4_of_counter_offset_plus_i_div_4():
    s = philox.uint32_stream(99, 10, 23)
    for i in (0, 5, 22):
        assert int(s[i]) == int(philox.uint32_stream(99, 10 + i // 4, 4)[i % 4])


def test_uniform_map_matches_tl_rand():
    w = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1])
    u = philox.uint_to_uniform(w)
    assert u.dtype == torch.float32 and bool(((u >= 0) & (u < 1)).all())
    assert float(u[1]) == float(torch.tensor(1.0) * torch.tensor(4.6566127342e-10))
    assert float(u[3]) == float(u[2])  # 2^31 bitcasts to -2^31, whose complement is 2^31 - 1


def test_open_uniform_never_zero_and_precise_near_zero():
    u = philox.uint_to_open_uniform(torch.tensor([0, 1, 2**20]))
    assert float(u[0]) == 0.5 * 2**-32 and float(u[1]) == 1.5 * 2**-32 and float(u[2]) > 0
    e = -torch.log1p(-u)
    assert bool((e > 0).all())


def test_normal_and_uniform_statistics():
    z = philox.normal_stream(7, 0, 200_000)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    u = philox.uniform_stream(8, 0, 200_000)
    assert abs(float(u.mean()) - 0.5) < 0.005
    hist = torch.histc(u, bins=10, min=0, max=1)
    assert float((hist - 20_000).abs().max()) < 4 * math.sqrt(20_000)


def test_streams_differ_by_seed_and_offset():
    a, b, c = (philox.uint32_stream(s, o, 64) for s, o in ((1, 0), (2, 0), (1, 16)))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(philox.uint32_stream(1, 0, 128)[64:], c)  # offset 16 counters = 64 words on
