"""A synthetic demo corpus: pictures of coloured shapes with captions that describe them.

Everything is drawn at run time, so the demo needs no download and no data it may not
redistribute. A known fraction of captions is shuffled, and the truth is kept in the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cleanpairs.noise import shuffle_captions

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
PLACES = {
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
    "center": (0.5, 0.5),
}
BACKGROUNDS = {"white": (250, 250, 250), "grey": (150, 150, 150), "black": (15, 15, 15)}
TEMPLATES = (
    "a {color} {shape} in the {place} on a {bg} background",
    "{bg} picture with a {color} {shape} at the {place}",
    "there is a {color} {shape} near the {place} of a {bg} canvas",
)


@dataclass(frozen=True)
class Scene:
    """What one demo picture shows."""

    color: str
    shape: str
    place: str
    background: str

    def caption(self, template: int) -> str:
        return TEMPLATES[template % len(TEMPLATES)].format(
            color=self.color, shape=self.shape, place=self.place, bg=self.background
        ).capitalize()


def render(scene: Scene, size: int = 224) -> Image.Image:
    """Draw ``scene`` as an RGB picture."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cx, cy = (int(v * size) for v in PLACES[scene.place])
    r = size // 6
    fill = COLORS[scene.color]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r // 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    return img


@dataclass
class DemoCorpus:
    """Pictures, captions (some shuffled) and the truth of each pair."""

    images: list[Image.Image]
    captions: list[str]
    image_ids: list[str]
    is_clean: np.ndarray


def make_demo_corpus(n_images: int = 200, captions_per_image: int = 2, noise: float = 0.3,
                     seed: int = 0) -> DemoCorpus:
    """Draw ``n_images`` random scenes with ``captions_per_image`` captions each, then shuffle
    the captions of a ``noise`` fraction of the pairs."""
    rng = np.random.default_rng(seed)
    scenes = [
        Scene(
            color=str(rng.choice(list(COLORS))),
            shape=str(rng.choice(SHAPES)),
            place=str(rng.choice(list(PLACES))),
            background=str(rng.choice(list(BACKGROUNDS))),
        )
        for _ in range(n_images)
    ]
    pictures, captions, image_ids = [], [], []
    for i, scene in enumerate(scenes):
        picture = render(scene)
        for c in range(captions_per_image):
            pictures.append(picture)
            captions.append(scene.caption(int(rng.integers(len(TEMPLATES))) + c))
            image_ids.append(f"img{i:05d}")
    shuffled = shuffle_captions(np.array(image_ids), noise, seed=seed)
    noisy_captions = [captions[j] for j in shuffled.caption_source]
    # A caption drawn from another picture of the same scene still describes this one.
    described = np.array([
        scenes[int(image_ids[j][3:])] == scenes[int(image_ids[i][3:])]
        for i, j in enumerate(shuffled.caption_source)
    ])
    return DemoCorpus(pictures, noisy_captions, image_ids, shuffled.is_clean | described)
