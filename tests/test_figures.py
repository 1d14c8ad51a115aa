"""The book's drawing helpers (book/figures.py): the animation player works offline, and the
diagrams refuse numbers that contradict what they draw."""

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
import figures  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def sliding_player(frames=3):
    rng = np.random.default_rng(0)
    image = rng.random((8, 8))
    kernel = np.array([[-1.0, 0.0, 1.0]] * 3)
    fmap = rng.standard_normal((6, 6))
    return figures.offline_jshtml(figures.sliding_animation(image, kernel, fmap, frames=frames))


def test_player_embeds_its_frames_and_loads_nothing_from_the_network():
    html = sliding_player(frames=3)
    frames = re.findall(r'frames\[\d+\] = "data:image/png;base64,', html)
    assert len(frames) == 3
    assert "font-awesome" not in html and "<link" not in html
    assert not re.search(r"https?:|//[\w-]+\.[\w.-]+/", html)
    assert '<i class="fa' not in html               # every icon became a character
    assert 'title="Play"' in html and "max-width: 100%" in html


def test_offline_jshtml_refuses_a_player_that_still_names_the_network():
    class Remote:
        def to_jshtml(self, default_mode=None):
            return '<script src="https://cdn.example.org/player.js"></script>'

    with pytest.raises(ValueError, match="offline_jshtml"):
        figures.offline_jshtml(Remote())


def test_sliding_animation_shows_the_last_position():
    anim = figures.sliding_animation(np.zeros((5, 5)), np.ones((3, 3)),
                                     np.arange(9.0).reshape(3, 3), frames=4)
    figures.offline_jshtml(anim)                     # draws every frame, the last one last
    title = anim._fig.axes[1].get_title()
    assert title == "map[ 2, 2] = +8.00"


def test_full_conv_figure_refuses_a_dx_that_is_not_the_full_correlation():
    W = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, 0.0, 1.0]])
    dout = np.array([[1.0, -1.0], [2.0, 3.0]])
    padded = np.pad(dout, 2)
    flipped = W[::-1, ::-1]
    dx = np.array([[np.sum(padded[i:i + 3, j:j + 3] * flipped) for j in range(4)]
                   for i in range(4)])
    figures.full_conv_figure(W, dout, dx, at=(1, 2))            # consistent: draws
    wrong = dx.copy()
    wrong[1, 2] += 1
    with pytest.raises(ValueError, match="full_conv_figure"):
        figures.full_conv_figure(W, dout, wrong, at=(1, 2))


def test_graph_arrows_start_and_end_on_the_boxes():
    fig, ax = plt.subplots()
    nodes = {"a": (0.0, 0.0, "a", "value"), "b": (4.0, 0.0, "b", "param")}
    boxes = figures.draw_graph(ax, nodes, [("a", "b", {})], xlim=(-1, 5), ylim=(-1, 1))
    to_data = ax.transData.inverted()
    (_, _), (a_right, _) = to_data.transform(
        boxes["a"].get_bbox_patch().get_window_extent().get_points())
    (b_left, _), (_, _) = to_data.transform(
        boxes["b"].get_bbox_patch().get_window_extent().get_points())
    arrow = next(c for c in ax.texts if c not in boxes.values())
    start, end = np.array(arrow.xyann), np.array(arrow.xy)
    assert a_right < start[0] < a_right + 0.2
    assert b_left - 0.2 < end[0] < b_left
