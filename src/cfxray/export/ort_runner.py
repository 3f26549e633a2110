"""Run an ONNX model on saved inputs in another Python (the production-runtime check).

`python ort_runner.py MODEL IN.npz OUT.npz OUTPUT...` inside the side environment of
`cfxray.export.compat`, which holds only numpy and one onnxruntime release: it imports
nothing from cfxray. Inputs are keyed `<feed>/<input name>`, outputs `<feed>/<output name>`.
A model the runtime cannot load or run exits 1 with the runtime's message on stderr.
"""

import sys

import numpy as np
import onnxruntime as ort


def main(model, inputs, results, outputs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = {}
        with np.load(inputs) as data:
            for key in data.files:
                index, name = key.split("/", 1)
                feeds.setdefault(int(index), {})[name] = data[key]
        got = {}
        for index, feed in sorted(feeds.items()):
            for name, array in zip(outputs, session.run(outputs, feed), strict=True):
                got[f"{index}/{name}"] = array
    except Exception as exc:  # the runtime's own message is what the export reports
        message = " ".join(str(exc).split())
        print(f"onnxruntime {ort.__version__}: {message[:600]}", file=sys.stderr)
        return 1
    np.savez(results, **got)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
