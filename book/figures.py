"""Drawing helpers for the book's diagrams: computational graphs, grids of numbers, im2col,
the input gradient as a full convolution, pooling's backward pass and a kernel sliding over a
digit.

This module draws; it computes nothing. Every number it writes is passed in by a chapter,
which computes it with the chapter's code or the package's layers and checks it there.
The chapters run with ``book/`` as the working directory, so ``import figures`` finds it.
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import animation
from matplotlib.patches import FancyBboxPatch, Rectangle

FORWARD = "black"
BACKWARD = "tab:red"
NODE_FILL = {"value": "#e8f0fa", "param": "#fdebd3", "op": "white", "shared": "white",
             "loss": "#eeeeee"}
# one colour per window / row / output pixel, linking the parts of a diagram
LINKS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


# -- computational graphs ---------------------------------------------------------------------

def draw_graph(ax, nodes, edges, xlim, ylim, fontsize=11):
    """Draw a computational graph on ``ax``, in data coordinates with equal aspect.

    ``nodes``: ``{name: (x, y, label, kind)}``; kind (the fill colour) is ``"value"``,
    ``"shared"``, ``"param"``, ``"loss"`` or ``"op"`` (drawn as a circle).
    ``edges``: ``[(src, dst, options)]``, straight arrows from box edge to box edge; options
    (all optional): ``color``, ``offset`` (shift sideways, data units, positive to the left of
    the arrow's direction: a backward arrow beside its forward one), ``label``,
    ``label_dist`` (distance of the label from the arrow, positive to the left),
    ``label_shift`` (along the arrow), ``ls``, ``lw``, ``fontsize``.
    Returns the text artists of the nodes, by name.
    """
    ax.set_aspect("equal")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    boxes = {}
    for name, (px, py, label, kind) in nodes.items():
        style = "circle,pad=0.2" if kind == "op" else "round,pad=0.35"
        boxes[name] = ax.text(px, py, label, ha="center", va="center", fontsize=fontsize,
                              multialignment="center", zorder=3,
                              bbox=dict(boxstyle=style, edgecolor="gray",
                                        facecolor=NODE_FILL[kind]))
    ax.figure.canvas.draw()                       # the boxes' sizes are known after a draw
    to_data = ax.transData.inverted()
    extent = {name: to_data.transform(box.get_bbox_patch().get_window_extent().get_points())
              for name, box in boxes.items()}

    def leave(name, p, u):
        """Where the ray p + t u (p inside the box of ``name``) leaves that box."""
        (x0, y0), (x1, y1) = extent[name]
        ts = [((x1 if u[k] > 0 else x0) if k == 0 else (y1 if u[k] > 0 else y0)) - p[k]
              for k in (0, 1)]
        t = min(ts[k] / u[k] for k in (0, 1) if abs(u[k]) > 1e-9)
        return p + t * u

    for src, dst, opt in edges:
        color = opt.get("color", FORWARD)
        a, b = np.array(nodes[src][:2], float), np.array(nodes[dst][:2], float)
        u = (b - a) / np.hypot(*(b - a))
        normal = np.array([-u[1], u[0]])               # to the left of the direction
        shift = opt.get("offset", 0.0) * normal
        start = leave(src, a + shift, u) + 0.06 * u
        end = leave(dst, b + shift, -u) - 0.06 * u
        ax.annotate("", xy=end, xytext=start, zorder=2,
                    arrowprops=dict(arrowstyle="-|>", mutation_scale=13, color=color,
                                    lw=opt.get("lw", 1.4), ls=opt.get("ls", "-"),
                                    shrinkA=0, shrinkB=0))
        if "label" in opt:
            mid = (start + end) / 2 + opt.get("label_shift", 0.0) * u
            pos = mid + opt.get("label_dist", 0.3) * normal
            ax.text(*pos, opt["label"], color=color, fontsize=opt.get("fontsize", fontsize - 1),
                    ha="center", va="center", multialignment="center", zorder=4)
    return boxes


def dense_graph():
    """The computational graph of ``y = x W + b``, forward (black) and backward (red),
    every backward arrow labelled with the gradient it carries and its shape. Returns the
    figure."""
    nodes = {
        "x": (0.0, 1.5, "$x$\n$(N, D)$", "value"),
        "W": (0.0, -1.5, "$W$\n$(D, M)$", "param"),
        "mm": (2.8, 0.0, "@", "op"),
        "add": (5.8, 0.0, "+", "op"),
        "b": (5.8, -2.3, "$b$\n$(M,)$", "param"),
        "y": (8.4, 0.0, "$y$\n$(N, M)$", "value"),
        "L": (11.7, 0.0, "loss $L$", "loss"),
    }
    back = dict(color=BACKWARD, offset=0.2, label_dist=0.5)
    edges = [
        ("x", "mm", {}), ("W", "mm", {}),
        ("mm", "add", dict(label="$xW$  $(N, M)$", label_dist=0.3)),
        ("b", "add", {}), ("add", "y", {}),
        ("y", "L", dict(ls="--", label="rest of\nthe network", label_dist=0.85)),
        ("L", "y", dict(back, label="$G = \\partial L / \\partial y$\n$(N, M)$",
                        label_dist=0.65)),
        ("y", "add", dict(back, label="$G$")),
        ("add", "mm", dict(back, label="$G$")),
        ("add", "b", dict(back, label="$\\partial L / \\partial b$ = sum of\nthe rows of $G$, $(M,)$",
                          label_dist=2.2, label_shift=1.3)),
        ("mm", "x", dict(back, offset=-0.2, label="$\\partial L / \\partial x = G W^\\top$"
                         "\n$(N, D)$", label_dist=-0.75, label_shift=0.2)),
        ("mm", "W", dict(back, label="$\\partial L / \\partial W = x^\\top G$\n$(D, M)$",
                         label_dist=0.75, label_shift=0.2)),
    ]
    fig, ax = plt.subplots(figsize=(6.8, 3.3))
    draw_graph(ax, nodes, edges, xlim=(-0.9, 12.6), ylim=(-3.0, 2.4), fontsize=13)
    ax.text(12.6, 2.1, "forward: values", color=FORWARD, ha="right", fontsize=12)
    ax.text(12.6, 1.6, "backward: gradients", color=BACKWARD, ha="right", fontsize=12)
    fig.tight_layout(pad=0.2)
    return fig


def batchnorm_graph(m=3):
    """The computational graph of batch normalization for one feature, drawn for ``m``
    examples: each ``x_i, c_i, xhat_i, y_i`` is its own node (blue), so the fan-out of the
    numbers shared by the feature (``mu, v, s``, white; ``gamma, beta``) is visible. The
    shared nodes sit between the first two rows of examples. Returns the figure."""
    gap = 2.4
    rows = [gap * (m - 1 - i) for i in range(m)]           # height of example i's row
    shared = rows[0] - gap / 2 if m > 1 else rows[0] + gap / 2
    nodes = {"mu": (1.6, shared, "$\\mu$  (1)", "shared"),
             "v": (4.7, shared, "$v$  (3)", "shared"),
             "s": (6.5, shared, "$s$  (4)", "shared"),
             "gamma": (9.5, rows[0] + 1.0, "$\\gamma$", "param"),
             "beta": (9.5, rows[-1] - 1.0, "$\\beta$", "param")}
    edges = [("v", "s", {})]
    for i, y in enumerate(rows, start=1):
        nodes[f"x{i}"] = (0.0, y, f"$x_{i}$", "value")
        nodes[f"c{i}"] = (3.2, y, f"$c_{i}$  (2)", "value")
        nodes[f"h{i}"] = (8.0, y, f"$\\hat{{x}}_{i}$  (5)", "value")
        nodes[f"y{i}"] = (11.1, y, f"$y_{i}$  (6)", "value")
        edges += [(f"x{i}", "mu", {}), (f"x{i}", f"c{i}", {}), ("mu", f"c{i}", {}),
                  (f"c{i}", "v", {}), (f"c{i}", f"h{i}", {}), ("s", f"h{i}", {}),
                  (f"h{i}", f"y{i}", {}), ("gamma", f"y{i}", {}), ("beta", f"y{i}", {})]
    for _, _, opt in edges:
        opt.update(lw=1.1)
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    draw_graph(ax, nodes, edges, xlim=(-0.6, 12.0), ylim=(rows[-1] - 1.5, rows[0] + 1.5),
               fontsize=12)
    fig.tight_layout(pad=0.2)
    return fig


# -- grids of numbers -------------------------------------------------------------------------

def draw_matrix(ax, values, x0, y0, fmt="{:g}", colors=None, fontsize=10, cell=1.0,
                edge="gray", title=None, title_size=None, text_colors=None, title_color="black"):
    """Draw ``values (rows, cols)`` as a grid of numbers with its top-left corner at
    ``(x0, y0)`` on an axis whose y grows downwards (``ax.invert_yaxis()``).

    ``colors``: same shape, a face colour (or None) per cell. Returns the cell centres as a
    function ``centre(i, j) -> (x, y)``.
    """
    values = np.asarray(values)
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            face = colors[i][j] if colors is not None and colors[i][j] else "white"
            ax.add_patch(Rectangle((x0 + j * cell, y0 + i * cell), cell, cell, facecolor=face,
                                   edgecolor=edge, lw=0.8))
            text = values[i, j] if values.dtype.kind in "US" else fmt.format(values[i, j])
            ax.text(x0 + (j + 0.5) * cell, y0 + (i + 0.5) * cell, text, ha="center",
                    va="center", fontsize=fontsize,
                    color=text_colors[i][j] if text_colors is not None else "black")
    if title:
        ax.text(x0 + cols * cell / 2, y0 - 0.25 * cell, title, ha="center", va="bottom",
                fontsize=title_size or fontsize, color=title_color)
    return lambda i, j: (x0 + (j + 0.5) * cell, y0 + (i + 0.5) * cell)


def outline(ax, x0, y0, rows, cols, color, lw=2.5, inset=0.0, cell=1.0, ls="-"):
    """A coloured frame around ``rows x cols`` cells whose top-left cell is at (x0, y0)."""
    ax.add_patch(Rectangle((x0 + inset, y0 + inset), cols * cell - 2 * inset,
                           rows * cell - 2 * inset, fill=False, edgecolor=color, lw=lw, ls=ls,
                           zorder=5))


def tint(color, alpha=0.25):
    """``color`` mixed with white: a light fill for cells linked to a frame of that colour."""
    from matplotlib.colors import to_rgb
    r, g, b = to_rgb(color)
    return (1 - alpha + alpha * r, 1 - alpha + alpha * g, 1 - alpha + alpha * b)


def _grid_axes(figsize):
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.axis("off")
    return fig, ax


def im2col_figure(x, W, cols, W2d, out, fontsize=13):
    """The im2col layout for one image of one channel and two or more kernels.

    ``x (H, W)``, kernels ``W (F, kh, kw)``, ``cols (Ho*Wo, kh*kw)`` (one row per window),
    ``W2d (F, kh*kw)`` (one row per kernel), ``out (F, Ho, Wo)``. Top: the input once per
    window, the window tinted in its colour, and the kernels. Bottom: cols times W2d
    transposed, one row per output pixel, folded back into the feature maps.
    """
    h, w = x.shape
    f, kh, kw = W.shape
    ho, wo = out.shape[1:]
    k = kh * kw
    fig, ax = _grid_axes((7.6, 6.9))
    # top row: the input once per window
    small = 0.62
    for r in range(ho * wo):
        i, j = divmod(r, wo)
        inside = [[i <= a < i + kh and j <= b < j + kw for b in range(w)] for a in range(h)]
        x0 = r * (w * small + 0.45)
        draw_matrix(ax, x, x0, 0.5, cell=small, fontsize=fontsize - 2,
                    colors=[[tint(LINKS[r]) if c else None for c in row] for row in inside],
                    text_colors=[["black" if c else "#999999" for c in row] for row in inside],
                    title=f"window ({i},{j})", title_size=fontsize - 3, title_color=LINKS[r])
        outline(ax, x0 + j * small, 0.5 + i * small, kh, kw, LINKS[r], lw=2, cell=small)
    # the kernels, right of the inputs
    kx = ho * wo * (w * small + 0.45) + 0.4
    for q in range(f):
        draw_matrix(ax, W[q], kx + q * (kw * 0.8 + 0.4), 0.5, cell=0.8, fontsize=fontsize - 1,
                    colors=[[tint(LINKS[-1 - q], 0.3)] * kw] * kh,
                    title=f"kernel {q + 1}", title_size=fontsize - 1)
    # bottom row: cols @ W2d.T = out2d
    y0 = 0.5 + max(h * small, kh * 0.8) + 1.5
    row_colors = [[tint(LINKS[r])] * k for r in range(ho * wo)]
    draw_matrix(ax, cols, 0, y0, fontsize=fontsize, colors=row_colors,
                title=f"cols ({ho * wo}×{k}): a window per row")
    for r in range(ho * wo):
        ax.text(-0.15, y0 + r + 0.5, f"({r // wo},{r % wo})", ha="right", va="center",
                fontsize=fontsize - 2, color=LINKS[r])
    wx = k + 1.0
    ax.text(k + 0.5, y0 + ho * wo / 2, "@", ha="center", va="center", fontsize=fontsize + 3)
    draw_matrix(ax, W2d.T, wx, y0, fontsize=fontsize,
                colors=[[tint(LINKS[-1 - q], 0.3) for q in range(f)] for _ in range(k)])
    ax.text(wx + f + 0.2, y0 + k - 0.1, "$W_{2d}^\\top$" + f" ({k}×{f}):\na kernel\nper column",
            ha="left", va="bottom", fontsize=fontsize - 1)
    ox = wx + f + 1.0
    ax.text(wx + f + 0.5, y0 + ho * wo / 2, "=", ha="center", va="center",
            fontsize=fontsize + 3)
    out2d = out.reshape(f, ho * wo).T
    draw_matrix(ax, out2d, ox, y0, fontsize=fontsize, colors=[[tint(LINKS[r])] * f
                                                              for r in range(ho * wo)],
                title=f"out2d ({ho * wo}×{f})")
    # the output maps, folded back
    mx = ox + f + 1.0
    for q in range(f):
        my = y0 + q * (ho + 1.0)
        draw_matrix(ax, out[q], mx, my, fontsize=fontsize,
                    colors=[[tint(LINKS[a * wo + b]) for b in range(wo)] for a in range(ho)],
                    title=f"map {q + 1}" if q == 0 else None)
        if q:
            ax.text(mx + wo / 2, my - 0.1, f"map {q + 1}", ha="center", va="bottom",
                    fontsize=fontsize)
    ax.annotate("", xy=(mx - 0.1, y0 + 1.0), xytext=(ox + f + 0.1, y0 + 1.0),
                arrowprops=dict(arrowstyle="-|>", color="gray"))
    right = max(mx + wo, kx + f * (kw * 0.8 + 0.4))
    ax.set_xlim(-1.3, right + 0.1)
    ax.set_ylim(y0 + k + 0.1, -0.3)
    fig.tight_layout(pad=0.1)
    return fig


def full_conv_figure(W, dout, dx, at=(0, 0), fontsize=13):
    """The input gradient of a stride-1 convolution as a full correlation: ``dout (Ho, Wo)``
    padded with ``kh-1`` rows and ``kw-1`` columns of zeros on each side, the kernel
    ``W (kh, kw)`` turned by 180°, one window framed (the one whose top-left corner is ``at``),
    the sum of its products with the rotated kernel, and
    ``dx (H, W)`` with the pixel that sum gives framed in the same colour."""
    kh, kw = W.shape
    ho, wo = dout.shape
    padded = np.pad(dout, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    ph, pw = padded.shape
    flipped = W[::-1, ::-1]
    fig, ax = _grid_axes((7.6, 4.3))
    draw_matrix(ax, W, 0, 0.5, fontsize=fontsize, title="kernel W")
    ax.annotate("", xy=(kw + 1.2, 0.5 + kh / 2), xytext=(kw + 0.2, 0.5 + kh / 2),
                arrowprops=dict(arrowstyle="-|>", color="gray"))
    ax.text(kw + 0.7, 0.3 + kh / 2, "180°", ha="center", va="bottom", fontsize=fontsize - 1)
    fx = kw + 1.4
    draw_matrix(ax, flipped, fx, 0.5, fontsize=fontsize, colors=[[tint("tab:red")] * kw] * kh,
                title="W rotated")
    px = fx + kw + 1.6
    dy0 = max(kh + 1.6, ph - ho)
    draw_matrix(ax, dout, 0, dy0, fontsize=fontsize, colors=[[tint("tab:blue")] * wo] * ho,
                title="dout")
    ax.annotate("", xy=(px - 0.1, dy0 + ho / 2), xytext=(wo + 0.1, dy0 + ho / 2),
                arrowprops=dict(arrowstyle="-|>", color="gray"))
    ax.text((wo + px) / 2, dy0 + ho / 2 - 0.15, "pad with zeros", ha="center", va="bottom",
            fontsize=fontsize - 1)
    in_dout = [[kh - 1 <= i < kh - 1 + ho and kw - 1 <= j < kw - 1 + wo for j in range(pw)]
               for i in range(ph)]
    draw_matrix(ax, padded, px, 0, fontsize=fontsize,
                colors=[[tint("tab:blue") if c else None for c in row] for row in in_dout],
                text_colors=[["black" if c else "#999999" for c in row] for row in in_dout],
                title=f"dout, padded: {kh - 1} zeros around")
    i0, j0 = at
    outline(ax, px + j0, i0, kh, kw, "tab:red", lw=2.5, inset=0.04)
    window = padded[i0:i0 + kh, j0:j0 + kw]
    def num(a):
        return f"({a:g})" if a < 0 else f"{a:g}"
    terms = [f"{num(a)}·{num(b)}" for a, b in zip(window.ravel(), flipped.ravel()) if a != 0]
    total = window.ravel() @ flipped.ravel()
    if not np.isclose(total, dx[i0, j0]):
        raise ValueError(f"full_conv_figure: the framed window sums to {total:g} but dx[{i0}, "
                         f"{j0}] is {dx[i0, j0]:g}: dx is not the full correlation drawn")
    ax.text(px + pw / 2, ph + 0.2, " + ".join(terms) + f" = {total:g}",
            ha="center", va="top", fontsize=fontsize - 1, color="tab:red")
    dxx = px + pw + 2.4
    ax.annotate("", xy=(dxx - 0.1, ph / 2), xytext=(px + pw + 0.1, ph / 2),
                arrowprops=dict(arrowstyle="-|>", color="gray"))
    ax.text(px + pw + 1.2, ph / 2 - 0.15, "slide the\nrotated W", ha="center", va="bottom",
            fontsize=fontsize - 3)
    ddy = (ph - dx.shape[0]) / 2
    draw_matrix(ax, dx, dxx, ddy, fmt="{:g}", fontsize=fontsize, title="dx")
    outline(ax, dxx + j0, ddy + i0, 1, 1, "tab:red", lw=2.5, inset=0.04)
    ax.set_xlim(-0.2, dxx + dx.shape[1] + 0.2)
    ax.set_ylim(max(ph + 1.0, dy0 + ho + 0.2), -0.9)
    fig.tight_layout(pad=0.1)
    return fig


def pooling_figure(x, winners, dout, dx_max, dx_avg, k=2, fontsize=12):
    """Backward of 2-D pooling with ``k x k`` windows and stride ``k`` on one channel: the
    input ``x (H, W)`` (each window framed in its colour, the max's winners, the boolean
    mask ``winners``, circled), the upstream gradient ``dout (H/k, W/k)``, and the input
    gradients of max pooling ``dx_max`` and average pooling ``dx_avg`` side by side."""
    h, w = x.shape
    ho, wo = dout.shape
    win = [[LINKS[(i // k) * wo + j // k] for j in range(w)] for i in range(h)]
    fig, ax = _grid_axes((7.6, 4.0))

    def frames(x0, y0):
        for i in range(ho):
            for j in range(wo):
                outline(ax, x0 + j * k, y0 + i * k, k, k, LINKS[i * wo + j], lw=2.2,
                        inset=0.04)

    draw_matrix(ax, x, 0, 0, fontsize=fontsize, colors=[[tint(c) for c in row] for row in win],
                title="input x")
    for i, j in zip(*np.nonzero(winners)):
        ax.add_patch(plt.Circle((j + 0.5, i + 0.5), 0.36, fill=False, lw=1.6, color="black"))
    frames(0, 0)
    ax.text(w / 2, h + 0.15, "max of each window circled", ha="center", va="top",
            fontsize=fontsize - 2)
    dy = (h - ho) / 2
    draw_matrix(ax, dout, w + 1.0, dy, fontsize=fontsize,
                colors=[[tint(LINKS[i * wo + j]) for j in range(wo)] for i in range(ho)],
                title="dout")
    gx = w + 1.0 + wo + 1.6
    notes = {True: "all of dout to\nthe winner", False: f"dout / {k * k} to\nevery input"}
    for title, dx, x0, is_max in (("max pool: dx", dx_max, gx, True),
                                  ("average pool: dx", dx_avg, gx + w + 1.2, False)):
        colors = [[tint(win[i][j]) if (dx[i, j] != 0 or not is_max) else None
                   for j in range(w)] for i in range(h)]
        text_colors = [["#aaaaaa" if dx[i, j] == 0 else "black" for j in range(w)]
                       for i in range(h)]
        draw_matrix(ax, dx, x0, 0, fontsize=fontsize, colors=colors, text_colors=text_colors,
                    title=title)
        frames(x0, 0)
        ax.text(x0 + w / 2, h + 0.15, notes[is_max], ha="center", va="top",
                fontsize=fontsize - 2)
    ax.annotate("", xy=(gx - 0.15, h / 2), xytext=(w + 1.0 + wo + 0.15, h / 2),
                arrowprops=dict(arrowstyle="-|>", color="gray"))
    ax.set_xlim(-0.2, gx + 2 * w + 1.4)
    ax.set_ylim(h + 1.3, -0.9)
    fig.tight_layout(pad=0.1)
    return fig


# -- the sliding kernel, animated ------------------------------------------------------------

def sliding_animation(image, kernel, fmap, frames=40, interval=300, dpi=80):
    """A kernel sliding over ``image (H, W)``: the window moves in reading order and the
    feature map ``fmap (Ho, Wo)`` (computed by the caller) fills in. ``frames`` positions,
    evenly spaced over the ``Ho*Wo`` of them, the last one included. Returns the animation."""
    ho, wo = fmap.shape
    kh, kw = kernel.shape
    positions = np.linspace(0, ho * wo - 1, frames).round().astype(int)
    lim = np.abs(fmap).max()
    fig, (ax_in, ax_out) = plt.subplots(1, 2, figsize=(6.4, 3.3), dpi=dpi)
    ax_in.imshow(image, cmap="gray_r")
    window = Rectangle((-0.5, -0.5), kw, kh, fill=False, edgecolor="tab:orange", lw=2.5)
    ax_in.add_patch(window)
    ax_in.set_title(f"input, {kh}×{kw} window", fontsize=14)
    shown = np.full(fmap.shape, np.nan)
    picture = ax_out.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_out.set_facecolor("#f4f4f4")
    pixel = Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="tab:orange", lw=2.5)
    ax_out.add_patch(pixel)
    title = ax_out.set_title("", fontsize=14, family="monospace")
    for ax in (ax_in, ax_out):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.87, wspace=0.08)

    def draw(t):
        p = positions[t]
        i, j = divmod(int(p), wo)
        shown.flat[:p + 1] = fmap.flat[:p + 1]
        picture.set_data(shown)
        window.set_xy((j - 0.5, i - 0.5))
        pixel.set_xy((j - 0.5, i - 0.5))
        title.set_text(f"map[{i:2d},{j:2d}] = {fmap[i, j]:+.2f}")
        return picture, window, pixel, title

    anim = animation.FuncAnimation(fig, draw, frames=frames, interval=interval, blit=False)
    plt.close(fig)
    return anim


# The player's buttons use Font Awesome icons loaded from a CDN; plain characters draw them
# offline.
_ICONS = {"fa fa-minus": "−", "fa fa-fast-backward": "⇤", "fa fa-step-backward": "‹",
          "fa fa-play fa-flip-horizontal": "◀", "fa fa-pause": "| |", "fa fa-play": "▶",
          "fa fa-step-forward": "›", "fa fa-fast-forward": "⇥", "fa fa-plus": "+"}


# On a narrow screen the player shrinks with its column instead of being cut off.
_NARROW_SCREENS = """<style>
.animation { max-width: 100%; }
.animation img { max-width: 100%; height: auto; }
input[type=range].anim-slider { max-width: 100%; }
.anim-buttons button { max-width: 9.5%; }
</style>
"""


def offline_jshtml(anim, default_mode="once"):
    """``anim.to_jshtml()`` with its frames embedded and nothing loaded from the network: the
    stylesheet link to a CDN is dropped and the icons it would draw become characters.
    Raises ``ValueError`` if any ``http`` address is left in the page."""
    html = anim.to_jshtml(default_mode=default_mode)
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html)
    for css, char in _ICONS.items():
        html = html.replace(f'<i class="{css}"></i>', char)
    html = _NARROW_SCREENS + html
    left = re.findall(r"(?:https?:)?//[\w.-]+\.\w+/", html)
    if left or "<i class=\"fa" in html:
        raise ValueError(f"offline_jshtml: the player still refers to the network: {left}")
    return html
