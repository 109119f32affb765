"""BYTES and FP16: upper-cases strings, returns their lengths, halves half-precision values."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            values = pb_utils.get_input_tensor_by_name(request, "VALUES").as_numpy()
            upper = np.array([t.upper() for t in text.ravel()], dtype=object).reshape(text.shape)
            lengths = np.array([len(t) for t in text.ravel()], dtype=np.int32).reshape(text.shape)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("UPPER", upper),
                        pb_utils.Tensor("LENGTHS", lengths),
                        pb_utils.Tensor("HALVED", (values / 2).astype(np.float16)),
                    ]
                )
            )
        return responses
