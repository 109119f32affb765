"""Sequences: SUM is the running sum of X over the sequence (by correlation id); START resets
it, END forgets the sequence, so that finished sequences hold nothing."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            flag = lambda name: bool(pb_utils.get_input_tensor_by_name(request, name).as_numpy().flat[0])  # noqa: E731
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            key = request.correlation_id()
            total = (0 if flag("START") else self.sums.get(key, 0)) + int(x.flat[0])
            if flag("END"):
                self.sums.pop(key, None)
            else:
                self.sums[key] = total
            tensor = pb_utils.Tensor("SUM", np.array([total], dtype=np.int32))
            responses.append(pb_utils.InferenceResponse([tensor]))
        return responses
