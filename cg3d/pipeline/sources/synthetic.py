"""The embedded default source: procedural furniture of the 10 ModelNet10 classes, no download.

Each class is a generator over parametric parts (shapes.py) with real variation inside the
class: proportions, leg count and shape, arms or none, headboard or none, rounded or square
parts, drawers, pedestals. A model has to learn the shape, not one template. Everything is
drawn from a generator seeded by (seed, class, index), so a run is reproducible and every
object can be made on its own, in parallel.

Files: `OUT/synthetic/<class>/<class>_XXXX.ply` (binary PLY), +Y up, front towards +Z, metres.
The folder uses underscores (night_stand); `class_name` is the benchmark's name from
protocol.json ("night stand"), and classes.json is the ModelNet10 list in benchmark order.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cg3d.files import atomic_path
from cg3d.formats.manifest import MeshRecord
from cg3d.pipeline.chunks import bound_workers, run_chunks, split_into_chunks
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import Listing, MeshesConfig, seeded_split
from cg3d.pipeline.sources.shapes import (
    Part,
    Parts,
    basin,
    box,
    cylinder,
    ring,
    rotate_x,
    rounded_box,
)
from cg3d.protocol import class_names

FOLDER = "synthetic"
DEFAULT_PER_CLASS = 60  # with --per-class 0
GENERATION_CHUNK = 200


def folder_name(class_name: str) -> str:
    return class_name.replace(" ", "_")


# Shared pieces.


def _legs(parts: Parts, rng, xs, zs, height: float) -> None:
    """Legs at every (x, z) corner from the floor up to `height`: round or square, maybe tapered."""
    thick = rng.uniform(0.025, 0.05)
    round_legs = rng.random() < 0.5
    taper = rng.uniform(0.6, 1.0)
    for x in xs:
        for z in zs:
            if round_legs:
                parts.add(cylinder([x, 0, z], [x, height, z], thick / 2 * taper, thick / 2, 10))
            else:
                parts.add(box([x, height / 2, z], [thick, height, thick]))


def _corner_legs(
    parts: Parts, rng, width: float, depth: float, height: float, inset: float = 0.03
) -> None:
    """Legs `inset` inside the corners of a width × depth footprint, from the floor up to `height`."""
    xs, zs = [-width / 2 + inset, width / 2 - inset], [-depth / 2 + inset, depth / 2 - inset]
    _legs(parts, rng, xs, zs, height)


def _drawer_fronts(parts: Parts, rng, x0, x1, y0, y1, z_front, rows, cols) -> None:
    """A grid of drawer fronts on a cabinet face, each with a knob or a bar handle."""
    gap = 0.012
    knobs = rng.random() < 0.5
    w = (x1 - x0) / cols
    h = (y1 - y0) / rows
    for r in range(rows):
        for c in range(cols):
            cx, cy = x0 + (c + 0.5) * w, y0 + (r + 0.5) * h
            parts.add(box([cx, cy, z_front + 0.008], [w - gap, h - gap, 0.016]))
            if knobs:
                parts.add(
                    cylinder([cx, cy, z_front + 0.016], [cx, cy, z_front + 0.04], 0.013, None, 8)
                )
            else:
                bar = min(0.5 * w, 0.18)
                parts.add(
                    box([cx, cy + 0.2 * h if rows > 1 else cy, z_front + 0.03], [bar, 0.015, 0.02])
                )


def _cabinet(parts: Parts, rng, width, height, depth, base, rows, cols, roundness=0.0) -> None:
    """Carcass with a top slab, drawer grid on the front, on legs or a plinth of height `base`."""
    body_h = height - base
    parts.add(box([0, base + body_h / 2, 0], [width, body_h, depth]))
    overhang = rng.uniform(0.0, 0.03)
    top_t = rng.uniform(0.02, 0.04)
    if roundness > 0:
        parts.add(
            rounded_box(
                [0, height + top_t / 2, 0],
                [width + 2 * overhang, top_t, depth + 2 * overhang],
                roundness,
            )
        )
    else:
        parts.add(
            box([0, height + top_t / 2, 0], [width + 2 * overhang, top_t, depth + 2 * overhang])
        )
    if base > 0:
        if rng.random() < 0.5:
            _corner_legs(parts, rng, width, depth, base)
        else:
            parts.add(box([0, base / 2, 0], [width - 0.04, base, depth - 0.04]))
    margin = 0.02
    _drawer_fronts(
        parts,
        rng,
        -width / 2 + margin,
        width / 2 - margin,
        base + margin,
        height - margin,
        depth / 2,
        rows,
        cols,
    )


# The ten classes.


def bathtub(rng) -> Part:
    parts = Parts()
    length, width, height = rng.uniform(1.4, 1.85), rng.uniform(0.68, 0.9), rng.uniform(0.45, 0.62)
    roundness = rng.choice([rng.uniform(0.15, 0.35), rng.uniform(0.5, 1.0)])
    wall = rng.uniform(0.04, 0.08)
    if rng.random() < 0.5:  # built in: a rectangular apron around a sunken basin
        parts.add(
            basin([0, height, 0], [length - 0.1, height - 0.08, width - 0.1], wall, roundness)
        )
        t = 0.06
        for z in (-width / 2 + t / 2, width / 2 - t / 2):
            parts.add(box([0, height / 2, z], [length, height, t]))
        for x in (-length / 2 + t / 2, length / 2 - t / 2):
            parts.add(box([x, height / 2, 0], [t, height, width]))
    else:  # freestanding on feet, or on a plinth
        lift = rng.uniform(0.08, 0.18)
        depth = height - lift
        parts.add(basin([0, height, 0], [length, depth, width], wall, roundness))
        if rng.random() < 0.6:
            for x in (-0.32 * length, 0.32 * length):
                for z in (-0.3 * width, 0.3 * width):
                    parts.add(cylinder([x * 1.05, 0, z * 1.1], [x, lift + 0.06, z], 0.035, 0.02, 8))
        else:
            parts.add(
                rounded_box([0, lift / 2 + 0.03, 0], [length * 0.7, lift + 0.06, width * 0.6], 0.3)
            )
    if rng.random() < 0.6:  # a tap at one end
        x = -length / 2 + 0.12
        parts.add(cylinder([x, height - 0.02, 0], [x, height + 0.18, 0], 0.018, None, 8))
        parts.add(cylinder([x, height + 0.18, 0], [x + 0.14, height + 0.16, 0], 0.014, None, 8))
    return parts.mesh()


def bed(rng) -> Part:
    parts = Parts()
    length, width = (
        rng.uniform(1.95, 2.2),
        rng.choice([rng.uniform(0.9, 1.1), rng.uniform(1.35, 1.9)]),
    )
    frame_top = rng.uniform(0.22, 0.42)
    mattress_t = rng.uniform(0.15, 0.3)
    leg_h = rng.uniform(0.08, 0.2) if rng.random() < 0.55 else 0.0
    frame_t = frame_top - leg_h
    # The bed's length runs along Z; the head at -Z.
    parts.add(box([0, leg_h + frame_t / 2, 0], [width, frame_t, length]))
    if leg_h > 0:
        _corner_legs(parts, rng, width, length, leg_h, inset=0.05)
    parts.add(
        rounded_box(
            [0, frame_top + mattress_t / 2, 0],
            [width - 0.04, mattress_t, length - 0.04],
            rng.uniform(0.1, 0.3),
        )
    )
    top = frame_top + mattress_t
    pillows = 1 if width < 1.2 else 2
    for i in range(pillows):
        x = (i - (pillows - 1) / 2) * width / pillows
        parts.add(
            rounded_box(
                [x, top + 0.06, -length / 2 + 0.3], [width / pillows * 0.8, 0.14, 0.38], 0.6
            )
        )
    if rng.random() < 0.6:  # a blanket over the foot end
        cover = rng.uniform(0.5, 0.75) * length
        parts.add(box([0, top + 0.015, length / 2 - cover / 2], [width + 0.04, 0.03, cover]))
    if rng.random() < 0.85:  # headboard: slab, rounded, or panel between posts
        head_h = rng.uniform(0.75, 1.3)
        style = rng.integers(3)
        z = -length / 2 - 0.03
        if style == 0:
            parts.add(box([0, head_h / 2, z], [width + 0.06, head_h, 0.06]))
        elif style == 1:
            parts.add(
                rounded_box([0, head_h / 2, z], [width + 0.06, head_h, 0.08], rng.uniform(0.2, 0.5))
            )
        else:
            for x in (-width / 2, width / 2):
                parts.add(cylinder([x, 0, z], [x, head_h, z], 0.035, None, 10))
            parts.add(
                box([0, (frame_top + head_h) / 2, z], [width, head_h - frame_top - 0.05, 0.04])
            )
        if rng.random() < 0.4:  # a lower footboard
            foot_h = rng.uniform(frame_top + 0.1, min(head_h, frame_top + 0.45))
            parts.add(box([0, foot_h / 2, length / 2 + 0.03], [width + 0.06, foot_h, 0.05]))
    return parts.mesh()


def _chair_legs(parts: Parts, rng, seat_w: float, seat_d: float, under_seat: float) -> None:
    """Four legs under the seat's corners, straight or splayed, maybe with stretchers."""
    thick = rng.uniform(0.025, 0.05)
    splay = rng.uniform(0.0, 0.05)
    round_legs = rng.random() < 0.5
    for sx in (-1, 1):
        for sz in (-1, 1):
            top = [sx * (seat_w / 2 - thick), under_seat, sz * (seat_d / 2 - thick)]
            foot = [top[0] + sx * splay, 0, top[2] + sz * splay]
            if round_legs or splay > 0.02:
                parts.add(cylinder(foot, top, thick / 2, thick / 2, 10))
            else:
                parts.add(box([top[0], under_seat / 2, top[2]], [thick, under_seat, thick]))
    if rng.random() < 0.4:  # stretchers between the legs
        y = rng.uniform(0.1, 0.2)
        for sx in (-1, 1):
            parts.add(
                box([sx * (seat_w / 2 - thick), y, 0], [thick * 0.6, thick * 0.6, seat_d - thick])
            )


def _office_pedestal(parts: Parts, rng, under_seat: float) -> None:
    """A column under the seat on 4 or 5 spokes, each ending in a castor."""
    parts.add(cylinder([0, 0.08, 0], [0, under_seat, 0], 0.03, 0.025, 12))
    spokes = rng.choice([4, 5])
    reach = rng.uniform(0.25, 0.33)
    for k in range(spokes):
        a = 2 * np.pi * k / spokes
        end = [reach * np.cos(a), 0.05, reach * np.sin(a)]
        parts.add(cylinder([0, 0.08, 0], end, 0.022, 0.018, 8))
        parts.add(rounded_box([end[0], 0.025, end[2]], [0.05, 0.05, 0.05], 0.8))


def _chair_back(
    parts: Parts, rng, seat_w: float, seat_d: float, seat_h: float, rounded: bool
) -> None:
    """A solid panel, slats, or a frame with a gap, at the seat's back, leaning back a little."""
    back_h = rng.uniform(0.35, 0.62)
    back_t = rng.uniform(0.025, 0.07)
    z = -seat_d / 2 + back_t / 2
    lean = np.radians(rng.uniform(0, 14))
    back = Parts()
    style = rng.integers(3)
    if style == 0:
        panel = [0, seat_h + back_h / 2, z], [seat_w, back_h, back_t]
        back.add(rounded_box(*panel, rng.uniform(0.15, 0.4)) if rounded else box(*panel))
    else:
        for sx in (-1, 1):
            back.add(
                box([sx * (seat_w / 2 - 0.02), seat_h + back_h / 2, z], [0.04, back_h, back_t])
            )
        back.add(box([0, seat_h + back_h - 0.05, z], [seat_w, 0.1, back_t]))
        if style == 1:
            slats = rng.integers(2, 6)
            for k in range(slats):
                x = (k + 1) / (slats + 1) * seat_w - seat_w / 2
                back.add(
                    box([x, seat_h + (back_h - 0.1) / 2, z], [0.025, back_h - 0.1, back_t * 0.6])
                )
        else:
            back.add(box([0, seat_h + 0.12, z], [seat_w, 0.06, back_t]))
    for part in back.parts:
        parts.add(rotate_x(part, -lean, [0, seat_h, z]))


def _chair_arms(parts: Parts, rng, seat_w: float, seat_d: float, seat_h: float) -> None:
    """An armrest on each side, on a post at the front."""
    arm_y = seat_h + rng.uniform(0.18, 0.26)
    for sx in (-1, 1):
        x = sx * (seat_w / 2 + 0.02)
        parts.add(box([x, arm_y, 0], [0.05, 0.035, seat_d * 0.9]))
        parts.add(box([x, (seat_h + arm_y) / 2, seat_d * 0.35], [0.035, arm_y - seat_h, 0.035]))


def chair(rng) -> Part:
    """A seat on four legs or an office pedestal, a backrest, and arms on some.

    The parts draw from `rng` in this order; changing it changes every chair's mesh.
    """
    parts = Parts()
    seat_h, seat_w, seat_d = rng.uniform(0.42, 0.5), rng.uniform(0.4, 0.56), rng.uniform(0.4, 0.52)
    seat_t = rng.uniform(0.03, 0.09)
    rounded = rng.random() < 0.5
    seat = [0, seat_h - seat_t / 2, 0], [seat_w, seat_t, seat_d]
    parts.add(rounded_box(*seat, rng.uniform(0.15, 0.4)) if rounded else box(*seat))
    if rng.random() < 0.7:
        _chair_legs(parts, rng, seat_w, seat_d, seat_h - seat_t)
    else:
        _office_pedestal(parts, rng, seat_h - seat_t)
    _chair_back(parts, rng, seat_w, seat_d, seat_h, rounded)
    if rng.random() < 0.35:
        _chair_arms(parts, rng, seat_w, seat_d, seat_h)
    return parts.mesh()


def desk(rng) -> Part:
    parts = Parts()
    height, width, depth = rng.uniform(0.72, 0.77), rng.uniform(1.0, 1.7), rng.uniform(0.55, 0.8)
    top_t = rng.uniform(0.025, 0.045)
    leg_h = height - top_t
    parts.add(box([0, height - top_t / 2, 0], [width, top_t, depth]))
    ped_w = rng.uniform(0.38, 0.48)
    layout = rng.integers(3)  # 0: one pedestal + legs, 1: two pedestals, 2: panel ends
    sides = {0: [rng.choice([-1, 1])], 1: [-1, 1], 2: []}[int(layout)]
    for sx in sides:
        x = sx * (width / 2 - ped_w / 2)
        parts.add(box([x, leg_h / 2, 0], [ped_w, leg_h, depth - 0.04]))
        rows = rng.integers(2, 5)
        _drawer_fronts(
            parts,
            rng,
            x - ped_w / 2 + 0.015,
            x + ped_w / 2 - 0.015,
            0.06,
            leg_h - 0.02,
            depth / 2 - 0.02,
            rows,
            1,
        )
    free = [sx for sx in (-1, 1) if sx not in sides]
    panel_ends = layout == 2 or rng.random() < 0.4
    for sx in free:
        if panel_ends:
            parts.add(box([sx * (width / 2 - 0.02), leg_h / 2, 0], [0.04, leg_h, depth - 0.04]))
        else:
            _legs(
                parts, rng, [sx * (width / 2 - 0.04)], [-depth / 2 + 0.04, depth / 2 - 0.04], leg_h
            )
    # A modesty panel at the back and a drawer under the top: what makes it a desk.
    parts.add(
        box(
            [0, leg_h - rng.uniform(0.2, 0.35) / 2, -depth / 2 + 0.03],
            [width - 0.1, rng.uniform(0.2, 0.35), 0.02],
        )
    )
    if layout == 2 or rng.random() < 0.5:
        parts.add(box([0, leg_h - 0.05, depth / 2 - 0.05], [0.5, 0.09, 0.02]))
    if rng.random() < 0.3:  # a shelf hutch at the back
        hutch_h = rng.uniform(0.3, 0.5)
        parts.add(box([0, height + hutch_h, -depth / 2 + 0.13], [width, 0.025, 0.26]))
        for sx in (-1, 1):
            parts.add(
                box(
                    [sx * (width / 2 - 0.01), height + hutch_h / 2, -depth / 2 + 0.13],
                    [0.02, hutch_h, 0.26],
                )
            )
    return parts.mesh()


def dresser(rng) -> Part:
    parts = Parts()
    width, height, depth = rng.uniform(0.9, 1.7), rng.uniform(0.75, 1.25), rng.uniform(0.42, 0.56)
    base = rng.uniform(0.04, 0.14)
    rows = int(rng.integers(3, 6))
    cols = 1 if width < 1.0 else int(rng.integers(2, 4))
    _cabinet(parts, rng, width, height, depth, base, rows, cols, rng.choice([0.0, 0.2]))
    return parts.mesh()


def monitor(rng) -> Part:
    parts = Parts()
    width = rng.uniform(0.45, 0.8)
    screen_h = width / rng.choice([16 / 9, 16 / 10, 4 / 3, 21 / 9])
    thick = rng.uniform(0.015, 0.05)
    bottom = rng.uniform(0.07, 0.2)
    centre = [0, bottom + screen_h / 2, 0]
    panel = centre, [width, screen_h, thick]
    parts.add(rounded_box(*panel, 0.08) if rng.random() < 0.4 else box(*panel))
    # The screen: a slightly inset face inside the bezel.
    bezel = rng.uniform(0.008, 0.03)
    parts.add(box([0, centre[1], thick / 2], [width - 2 * bezel, screen_h - 2 * bezel, 0.004]))
    if rng.random() < 0.25:  # a deep back (an older set)
        parts.add(
            rounded_box([0, centre[1], -thick / 2 - 0.06], [width * 0.6, screen_h * 0.6, 0.12], 0.4)
        )
    neck_z = -thick / 2 - 0.03
    if rng.random() < 0.5:
        parts.add(box([0, centre[1] / 2, neck_z], [0.06, centre[1], 0.025]))
    else:
        parts.add(cylinder([0, 0.01, neck_z], [0, centre[1], neck_z], 0.02, None, 10))
    style = rng.integers(3)
    if style == 0:
        parts.add(box([0, 0.01, neck_z], [rng.uniform(0.2, 0.32), 0.02, rng.uniform(0.15, 0.22)]))
    elif style == 1:
        parts.add(cylinder([0, 0, neck_z], [0, 0.02, neck_z], rng.uniform(0.09, 0.13), None, 24))
    else:  # V-shaped feet
        for sx in (-1, 1):
            parts.add(cylinder([0, 0.01, neck_z], [sx * 0.14, 0.01, neck_z + 0.14], 0.015, None, 8))
    return parts.mesh()


def night_stand(rng) -> Part:
    parts = Parts()
    width, depth = rng.uniform(0.38, 0.55), rng.uniform(0.33, 0.45)
    height = rng.uniform(max(0.45, width), 0.7)
    base = rng.uniform(0.03, 0.2)
    if rng.random() < 0.5:  # drawers all the way down
        _cabinet(parts, rng, width, height, depth, base, int(rng.integers(1, 4)), 1)
    else:  # one drawer above an open shelf
        t = 0.02
        body = height - base
        drawer_h = rng.uniform(0.12, 0.2)
        for sx in (-1, 1):
            parts.add(box([sx * (width / 2 - t / 2), base + body / 2, 0], [t, body, depth]))
        parts.add(box([0, base + t / 2, 0], [width, t, depth]))
        parts.add(box([0, base + body / 2, -depth / 2 + t / 2], [width, body, t]))
        parts.add(box([0, height - drawer_h / 2, 0], [width, drawer_h, depth]))
        parts.add(box([0, height + 0.01, 0], [width + 0.02, 0.02, depth + 0.02]))
        _drawer_fronts(
            parts,
            rng,
            -width / 2 + 0.02,
            width / 2 - 0.02,
            height - drawer_h,
            height,
            depth / 2,
            1,
            1,
        )
        _corner_legs(parts, rng, width, depth, base)
    return parts.mesh()


def sofa(rng) -> Part:
    parts = Parts()
    width, depth = rng.uniform(1.4, 2.4), rng.uniform(0.8, 1.0)
    seat_h = rng.uniform(0.4, 0.48)
    leg_h = rng.uniform(0.04, 0.15) if rng.random() < 0.7 else 0.0
    roundness = rng.uniform(0.1, 0.4)
    base_h = seat_h - 0.12 - leg_h
    parts.add(rounded_box([0, leg_h + base_h / 2, 0], [width, base_h, depth], 0.1))
    if leg_h > 0:
        _corner_legs(parts, rng, width, depth, leg_h, inset=0.06)
    arms = rng.choice(["none", "square", "rolled"], p=[0.15, 0.5, 0.35])
    arm_w = 0.0 if arms == "none" else rng.uniform(0.12, 0.25)
    inner = width - 2 * arm_w
    back_t = rng.uniform(0.15, 0.25)
    seats = int(np.clip(round(inner / rng.uniform(0.55, 0.75)), 1, 4))
    for k in range(seats):
        x = -inner / 2 + (k + 0.5) * inner / seats
        parts.add(
            rounded_box(
                [x, seat_h - 0.06, back_t / 2],
                [inner / seats - 0.01, 0.14, depth - back_t],
                roundness,
            )
        )
    back_top = seat_h + rng.uniform(0.35, 0.5)
    parts.add(
        rounded_box(
            [0, (leg_h + back_top) / 2, -depth / 2 + back_t / 2],
            [width, back_top - leg_h, back_t],
            roundness,
        )
    )
    if rng.random() < 0.5:  # back cushions
        for k in range(seats):
            x = -inner / 2 + (k + 0.5) * inner / seats
            z = -depth / 2 + back_t + 0.08
            parts.add(rounded_box([x, seat_h + 0.2, z], [inner / seats - 0.02, 0.36, 0.16], 0.5))
    arm_top = seat_h + rng.uniform(0.15, 0.25)
    for sx in (-1, 1) if arms != "none" else ():
        x = sx * (width / 2 - arm_w / 2)
        parts.add(
            rounded_box(
                [x, (leg_h + arm_top) / 2, 0], [arm_w, arm_top - leg_h, depth], roundness * 0.6
            )
        )
        if arms == "rolled":
            parts.add(
                cylinder([x, arm_top, -depth / 2], [x, arm_top, depth / 2], arm_w * 0.6, None, 14)
            )
    return parts.mesh()


def table(rng) -> Part:
    parts = Parts()
    kind = rng.choice(["dining", "round", "coffee"], p=[0.45, 0.3, 0.25])
    height = rng.uniform(0.35, 0.5) if kind == "coffee" else rng.uniform(0.7, 0.78)
    top_t = rng.uniform(0.02, 0.06)
    leg_h = height - top_t
    if kind == "round":
        radius = rng.uniform(0.4, 0.7)
        parts.add(cylinder([0, leg_h, 0], [0, height, 0], radius, None, 40))
        if rng.random() < 0.6:  # a pedestal on a foot
            parts.add(cylinder([0, 0.04, 0], [0, leg_h, 0], rng.uniform(0.04, 0.09), None, 16))
            parts.add(cylinder([0, 0, 0], [0, 0.04, 0], radius * rng.uniform(0.4, 0.6), None, 24))
        else:
            legs = rng.choice([3, 4])
            for k in range(legs):
                a = 2 * np.pi * k / legs + np.pi / 4
                r = radius * 0.7
                parts.add(
                    cylinder(
                        [r * np.cos(a) * 1.1, 0, r * np.sin(a) * 1.1],
                        [r * np.cos(a), leg_h, r * np.sin(a)],
                        0.025,
                        None,
                        10,
                    )
                )
        return parts.mesh()
    width = rng.uniform(0.9, 1.4) if kind == "coffee" else rng.uniform(1.1, 2.0)
    depth = rng.uniform(0.5, 0.7) if kind == "coffee" else rng.uniform(0.7, 1.0)
    top = [0, height - top_t / 2, 0], [width, top_t, depth]
    parts.add(rounded_box(*top, 0.1) if rng.random() < 0.3 else box(*top))
    if rng.random() < 0.2:  # trestle ends
        for sx in (-1, 1):
            x = sx * (width / 2 - 0.15)
            parts.add(box([x, leg_h / 2, 0], [0.06, leg_h, depth * 0.6]))
            parts.add(box([x, 0.03, 0], [0.08, 0.06, depth * 0.8]))
        parts.add(box([0, leg_h * 0.4, 0], [width - 0.3, 0.06, 0.05]))
        return parts.mesh()
    inset = rng.uniform(0.03, 0.1)
    xs, zs = [-width / 2 + inset, width / 2 - inset], [-depth / 2 + inset, depth / 2 - inset]
    _legs(parts, rng, xs, zs, leg_h)
    if rng.random() < 0.5:  # apron under the top
        parts.add(box([0, leg_h - 0.05, zs[0]], [width - 2 * inset, 0.08, 0.02]))
        parts.add(box([0, leg_h - 0.05, zs[1]], [width - 2 * inset, 0.08, 0.02]))
    if kind == "coffee" and rng.random() < 0.5:  # a lower shelf
        parts.add(box([0, 0.1, 0], [width - 2 * inset, 0.02, depth - 2 * inset]))
    return parts.mesh()


def toilet(rng) -> Part:
    parts = Parts()
    rim_h = rng.uniform(0.38, 0.45)
    bowl_w, bowl_l = rng.uniform(0.34, 0.4), rng.uniform(0.45, 0.56)
    bowl_depth = rng.uniform(0.18, 0.26)
    roundness = rng.uniform(0.6, 1.0)
    # The bowl's length runs along Z, the tank at the back (-Z).
    bowl_z = 0.06
    parts.add(basin([0, rim_h, bowl_z], [bowl_w, bowl_depth, bowl_l], 0.025, roundness))
    foot = rng.uniform(0.2, 0.28)
    pedestal = rounded_box(
        [0, (rim_h - bowl_depth * 0.5) / 2, bowl_z - 0.05],
        [foot, rim_h - bowl_depth * 0.5, bowl_l * 0.6],
        rng.uniform(0.3, 0.7),
    )
    parts.add(pedestal)
    parts.add(ring([0, rim_h + 0.015, bowl_z], [bowl_w / 2 - 0.03, bowl_l / 2 - 0.03], 0.022))
    lid = rng.choice(["open", "closed", "none"], p=[0.35, 0.45, 0.2])
    if lid == "closed":
        parts.add(
            rounded_box([0, rim_h + 0.045, bowl_z], [bowl_w - 0.02, 0.025, bowl_l - 0.02], 0.9)
        )
    tank_back = bowl_z - bowl_l / 2
    if rng.random() < 0.85:
        tank_w, tank_d, tank_h = (
            rng.uniform(0.36, 0.5),
            rng.uniform(0.15, 0.22),
            rng.uniform(0.3, 0.42),
        )
        tank_z = tank_back - tank_d / 2 + 0.05
        tank = [0, rim_h + tank_h / 2 - 0.02, tank_z], [tank_w, tank_h, tank_d]
        parts.add(rounded_box(*tank, 0.2) if rng.random() < 0.5 else box(*tank))
        parts.add(box([0, rim_h + tank_h - 0.01, tank_z], [tank_w + 0.02, 0.03, tank_d + 0.02]))
        lid_z = tank_z + tank_d / 2 + 0.02
    else:  # a pipe up to a wall cistern
        parts.add(
            cylinder(
                [0, rim_h - 0.05, tank_back + 0.02],
                [0, rim_h + 0.55, tank_back - 0.05],
                0.025,
                None,
                10,
            )
        )
        lid_z = tank_back + 0.04
    if lid == "open":
        parts.add(
            rounded_box([0, rim_h + bowl_l / 2, lid_z], [bowl_w - 0.02, bowl_l - 0.04, 0.025], 0.9)
        )
    return parts.mesh()


GENERATORS: dict[str, Callable[[np.random.Generator], Part]] = {
    "bathtub": bathtub,
    "bed": bed,
    "chair": chair,
    "desk": desk,
    "dresser": dresser,
    "monitor": monitor,
    "night stand": night_stand,
    "sofa": sofa,
    "table": table,
    "toilet": toilet,
}


def make_object(class_name: str, index: int, seed: int) -> Part:
    """Object `index` of a class: the same arrays for the same (seed, class, index)."""
    class_index = list(GENERATORS).index(class_name)
    rng = np.random.default_rng([seed, class_index, index])
    vertices, faces = GENERATORS[class_name](rng)
    # Slanted legs and feet dip a little below the floor: stand the object on y = 0.
    vertices = vertices - [0.0, vertices[:, 1].min(), 0.0]
    return vertices.astype(np.float64), faces.astype(np.int64)


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A binary PLY, written atomically (a killed run leaves no half file under the real name)."""
    import trimesh

    # atomic_path: a failed write (a full disk) leaves no temp file and names `path`
    with atomic_path(path) as tmp:
        trimesh.Trimesh(vertices, faces, process=False).export(tmp, file_type="ply")


def relpath(class_name: str, index: int) -> str:
    name = folder_name(class_name)
    return f"{FOLDER}/{name}/{name}_{index:04d}.ply"


def generate_chunk(out_dir: str, jobs: list[tuple[str, int]], seed: int) -> int:
    for class_name, index in jobs:
        vertices, faces = make_object(class_name, index, seed)
        write_ply(Path(out_dir) / relpath(class_name, index), vertices, faces)
    return len(jobs)


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    """Generate the objects (in parallel) under OUT/synthetic, then list them."""
    classes = class_names("modelnet10")
    if set(classes) != set(GENERATORS):
        raise RuntimeError("the synthetic generators must cover exactly the ModelNet10 classes")
    target = out_dir / FOLDER
    shutil.rmtree(target, ignore_errors=True)  # objects of a previous, bigger or other-seed run
    for class_name in classes:
        (target / folder_name(class_name)).mkdir(parents=True)
    per_class = config.per_class or DEFAULT_PER_CLASS
    objects = [(c, i) for c in classes for i in range(per_class)]
    # Small chunks (an object takes about a millisecond): every process gets work.
    chunks = split_into_chunks(objects, min(config.chunk_size, GENERATION_CHUNK))
    run_chunks(
        generate_chunk,
        [(str(out_dir), chunk, config.seed) for chunk in chunks],
        [len(chunk) for chunk in chunks],
        workers=bound_workers(config.workers, config.executor),
        executor=config.executor,
        description="generating synthetic meshes",
    )
    records = []
    for class_name in classes:
        paths = [relpath(class_name, i) for i in range(per_class)]
        split_of = seeded_split(paths, config.seed, config.test_fraction)
        for path in paths:
            records.append(
                MeshRecord(
                    id=object_id("synthetic", path.removeprefix(f"{FOLDER}/")),
                    source="synthetic",
                    path=path,  # relative to the output folder
                    class_name=class_name,
                    split=split_of[path],
                    up_axis="y",
                )
            )
    return Listing(classes, records)
