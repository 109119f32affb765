"""Variable dimensions with batching and an optional input: Y = 3 * X (+ BIAS when given)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = 3 * x
            bias = pb_utils.get_input_tensor_by_name(request, "BIAS")
            if bias is not None:
                y = y + bias.as_numpy()
            argmax = np.argmax(x, axis=1).astype(np.int64).reshape(-1, 1)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("Y", y.astype(np.float32)), pb_utils.Tensor("ARGMAX", argmax)]
                )
            )
        return responses
