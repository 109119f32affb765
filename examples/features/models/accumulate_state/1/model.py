"""Sequences with implicit state: SUM is INPUT_STATE + X and becomes OUTPUT_STATE, which Triton
keeps for the sequence and sends as the next request's INPUT_STATE (zero at START); the model
itself holds nothing. Triton 2.51's python backend never hands OUTPUT_STATE back to Triton
(it calls no TRITONBACKEND_StateNew/StateUpdate), so there every step sees the initial zero."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            state = pb_utils.get_input_tensor_by_name(request, "INPUT_STATE").as_numpy()
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            total = np.array([int(state.flat[0]) + int(x.flat[0])], dtype=np.int32)
            outputs = [pb_utils.Tensor("SUM", total), pb_utils.Tensor("OUTPUT_STATE", total)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
