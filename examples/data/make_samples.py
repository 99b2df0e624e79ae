"""Regenerate the bundled sample data (deterministic): judge_sample.jsonl and corpus.jsonl.

    python examples/data/make_samples.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

CAPITALS = [
    ("France", "Paris", "Lyon"), ("Germany", "Berlin", "Munich"), ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"), ("Japan", "Tokyo", "Osaka"), ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"), ("Brazil", "Brasilia", "Rio de Janeiro"),
    ("India", "New Delhi", "Mumbai"), ("Egypt", "Cairo", "Alexandria"),
    ("Kenya", "Nairobi", "Mombasa"), ("Turkey", "Ankara", "Istanbul"),
    ("Switzerland", "Bern", "Zurich"), ("Vietnam", "Hanoi", "Ho Chi Minh City"),
    ("Morocco", "Rabat", "Casablanca"), ("New Zealand", "Wellington", "Auckland"),
    ("Nigeria", "Abuja", "Lagos"), ("Pakistan", "Islamabad", "Karachi"),
    ("South Korea", "Seoul", "Busan"), ("Norway", "Oslo", "Bergen"),
]

PLANETS = {
    "Mercury": "the smallest planet and the closest to the Sun, with almost no atmosphere",
    "Venus": "the hottest planet, wrapped in thick clouds of sulfuric acid",
    "Earth": "the only planet known to host life, with liquid water oceans",
    "Mars": "the red planet, coloured by iron oxide dust, home of Olympus Mons",
    "Jupiter": "the largest planet, a gas giant with the Great Red Spot storm",
    "Saturn": "a gas giant famous for its bright system of icy rings",
    "Uranus": "an ice giant that rotates on its side",
    "Neptune": "the windiest planet, a deep blue ice giant far from the Sun",
}

ELEMENTS = [
    ("hydrogen", 1, "the lightest element, fuel of stars"), ("helium", 2, "an inert gas used in balloons and cryogenics"),
    ("carbon", 6, "the backbone of organic chemistry"), ("nitrogen", 7, "most of the air we breathe"),
    ("oxygen", 8, "needed for respiration and combustion"), ("silicon", 14, "the base of computer chips"),
    ("iron", 26, "the main metal in steel"), ("copper", 29, "an excellent conductor used in wiring"),
    ("silver", 47, "the best electrical conductor of all metals"), ("gold", 79, "a dense metal that does not tarnish"),
    ("mercury", 80, "the only metal that is liquid at room temperature"), ("uranium", 92, "a fuel for nuclear reactors"),
]

TOPICS = [
    ("SLURM", "a workload manager that schedules batch jobs on clusters"),
    ("Parsl", "a Python library that runs functions as parallel apps on clusters"),
    ("vLLM", "an inference server for large language models with continuous batching"),
    ("Shifter", "the container runtime used at NERSC for user images"),
    ("Perlmutter", "a NERSC supercomputer with nodes of four A100 GPUs"),
    ("MPI", "the message passing interface used by parallel scientific codes"),
    ("Lustre", "a parallel file system for large HPC centres"),
    ("CUDA", "NVIDIA's platform for programming GPUs"),
]

INSTRUMENTS = ["spectrometer", "detector", "telescope", "sensor array", "calorimeter", "magnetometer"]
QUANTITIES = [("temperature", "K"), ("pressure", "kPa"), ("flux", "photons/s"), ("voltage", "mV")]


def judge_items(rng: random.Random) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for country, right, wrong in CAPITALS:
        items.append({"id": f"capital-{country.lower().replace(' ', '-')}",
                      "question": f"What is the capital of {country}?",
                      "answers": [right, wrong], "reference": 0})
    for planet, fact in PLANETS.items():
        items.append({"id": f"planet-{planet.lower()}",
                      "question": f"Which planet is {fact}?",
                      "answers": [planet, rng.choice([p for p in PLANETS if p != planet])],
                      "reference": 0})
    while len(items) < 200:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        right = eval(f"{a}{op}{b}")  # noqa: S307 - our own two integers
        wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
        answers = [str(right), str(wrong)]
        reference = 0
        if rng.random() < 0.5:
            answers.reverse()
            reference = 1
        items.append({"id": f"arith-{len(items):03d}", "question": f"What is {a} {op} {b}?",
                      "answers": answers, "reference": reference})
    return items


def corpus(rng: random.Random) -> list[dict[str, str]]:
    docs = []
    for planet, fact in PLANETS.items():
        docs.append({"id": f"planet-{planet.lower()}", "text": f"{planet} is {fact}."})
    for name, number, fact in ELEMENTS:
        docs.append({"id": f"element-{name}",
                     "text": f"{name.capitalize()} has atomic number {number}; it is {fact}."})
    for name, fact in TOPICS:
        docs.append({"id": f"hpc-{name.lower()}", "text": f"{name} is {fact}."})
    for country, capital, city in CAPITALS:
        docs.append({"id": f"capital-{country.lower().replace(' ', '-')}",
                     "text": f"{capital} is the capital of {country}, while {city} is "
                             f"another large city there."})
    while len(docs) < 3000:
        instrument = rng.choice(INSTRUMENTS)
        quantity, unit = rng.choice(QUANTITIES)
        run = rng.randint(1, 900)
        value = round(rng.uniform(0.1, 500.0), 2)
        docs.append({"id": f"log-{len(docs):05d}",
                     "text": f"Run {run}: the {instrument} recorded a {quantity} of {value} {unit} "
                             f"during shift {rng.randint(1, 3)}, operator note {rng.randint(1, 99)}."})
    return docs


def main() -> None:
    rng = random.Random(2026)
    with open(HERE / "judge_sample.jsonl", "w", encoding="utf-8") as handle:
        for item in judge_items(rng):
            handle.write(json.dumps(item) + "\n")
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc in corpus(rng):
            handle.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
