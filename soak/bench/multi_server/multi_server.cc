// Copyright (c) 2020, NVIDIA CORPORATION. All rights reserved.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions
// are met:
//  * Redistributions of source code must retain the above copyright
//    notice, this list of conditions and the following disclaimer.
//  * Redistributions in binary form must reproduce the above copyright
//    notice, this list of conditions and the following disclaimer in the
//    documentation and/or other materials provided with the distribution.
//  * Neither the name of NVIDIA CORPORATION nor the names of its
//    contributors may be used to endorse or promote products derived
//    from this software without specific prior written permission.
//
// THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS ``AS IS'' AND ANY
// EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
// IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
// PURPOSE ARE DISCLAIMED.  IN NO EVENT SHALL THE COPYRIGHT OWNER OR
// CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL,
// EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO,
// PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR
// PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY
// OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
// (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
// OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

// soak's `make bench` anchor, after Triton's src/multi_server.cc (server
// repository): the same create / load / infer-and-check / unload / delete
// cycle, made concurrent: each iteration runs N threads, thread i owning one
// server over <common repo> and <instance repo i> (soak's `servers` scenario
// repositories: python add/sub models, INT32 [1,16]). ServerNew and
// ServerDelete are serialized by one mutex, as soak does (Triton 2.51's
// process-wide PinnedMemoryManager is created and reset without a lock).
//
// Usage: multi_server <backends dir> <iterations> <inferences per model>
//            <common repo> <instance repo>...
// Prints "iteration_s <seconds>" per iteration; exits 1 on any error.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <future>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "triton/core/tritonserver.h"

namespace {

std::mutex new_delete;
std::mutex fail_lock;

[[noreturn]] void
Fail(const std::string& msg)
{
  std::lock_guard<std::mutex> lk(fail_lock);
  std::cerr << "error: " << msg << std::endl;
  // Not exit(): static destructors under running Triton threads can hang.
  std::_Exit(1);
}

void
FailIfErr(TRITONSERVER_Error* err, const std::string& what)
{
  if (err != nullptr) {
    std::string msg = what + ": " + TRITONSERVER_ErrorCodeString(err) + " - " +
                      TRITONSERVER_ErrorMessage(err);
    TRITONSERVER_ErrorDelete(err);
    Fail(msg);
  }
}

TRITONSERVER_Error*
ResponseAlloc(
    TRITONSERVER_ResponseAllocator* allocator, const char* tensor_name,
    size_t byte_size, TRITONSERVER_MemoryType preferred_memory_type,
    int64_t preferred_memory_type_id, void* userp, void** buffer,
    void** buffer_userp, TRITONSERVER_MemoryType* actual_memory_type,
    int64_t* actual_memory_type_id)
{
  *actual_memory_type = TRITONSERVER_MEMORY_CPU;
  *actual_memory_type_id = 0;
  *buffer = byte_size == 0 ? nullptr : malloc(byte_size);
  *buffer_userp = nullptr;
  return nullptr;
}

TRITONSERVER_Error*
ResponseRelease(
    TRITONSERVER_ResponseAllocator* allocator, void* buffer, void* buffer_userp,
    size_t byte_size, TRITONSERVER_MemoryType memory_type,
    int64_t memory_type_id)
{
  free(buffer);
  return nullptr;
}

void
InferRequestComplete(
    TRITONSERVER_InferenceRequest* request, const uint32_t flags, void* userp)
{
  // The request is reused: Triton 2.51 refuses a request sent again before
  // this release ("Invalid request state transition from EXECUTING to
  // INITIALIZED"), so the sender waits for it.
  if ((flags & TRITONSERVER_REQUEST_RELEASE_ALL) != 0) {
    reinterpret_cast<std::promise<void>*>(userp)->set_value();
  }
}

void
InferResponseComplete(
    TRITONSERVER_InferenceResponse* response, const uint32_t flags, void* userp)
{
  if (response != nullptr) {
    auto* p =
        reinterpret_cast<std::promise<TRITONSERVER_InferenceResponse*>*>(userp);
    p->set_value(response);
    delete p;
  }
}

void
Check(
    TRITONSERVER_InferenceResponse* response, const std::vector<int32_t>& in0,
    const std::vector<int32_t>& in1, const std::string& model)
{
  FailIfErr(TRITONSERVER_InferenceResponseError(response), "response " + model);
  uint32_t count;
  FailIfErr(
      TRITONSERVER_InferenceResponseOutputCount(response, &count),
      "output count");
  if (count != 2) {
    Fail("expecting 2 outputs from " + model);
  }
  for (uint32_t idx = 0; idx < count; ++idx) {
    const char* cname;
    TRITONSERVER_DataType datatype;
    const int64_t* shape;
    uint64_t dim_count;
    const void* base;
    size_t byte_size;
    TRITONSERVER_MemoryType memory_type;
    int64_t memory_type_id;
    void* userp;
    FailIfErr(
        TRITONSERVER_InferenceResponseOutput(
            response, idx, &cname, &datatype, &shape, &dim_count, &base,
            &byte_size, &memory_type, &memory_type_id, &userp),
        "output info");
    std::string name(cname);
    if (dim_count != 2 || shape[0] != 1 || shape[1] != 16 ||
        datatype != TRITONSERVER_TYPE_INT32 || byte_size != 16 * 4) {
      Fail("unexpected shape, datatype or size of " + name + " of " + model);
    }
    const int32_t* out = reinterpret_cast<const int32_t*>(base);
    for (size_t i = 0; i < 16; ++i) {
      int32_t want = name == "OUTPUT0" ? in0[i] + in1[i] : in0[i] - in1[i];
      if (name != "OUTPUT0" && name != "OUTPUT1") {
        Fail("unexpected output " + name + " of " + model);
      }
      if (out[i] != want) {
        Fail("incorrect " + name + " of " + model);
      }
    }
  }
}

void
Infer(
    TRITONSERVER_Server* server, TRITONSERVER_ResponseAllocator* allocator,
    const std::string& model, int inferences)
{
  std::vector<int32_t> in0(16), in1(16, 1);
  for (int i = 0; i < 16; ++i) {
    in0[i] = i;
  }
  const int64_t shape[] = {1, 16};
  TRITONSERVER_InferenceRequest* request = nullptr;
  FailIfErr(
      TRITONSERVER_InferenceRequestNew(&request, server, model.c_str(), -1),
      "request new");
  const std::vector<int32_t>* data[] = {&in0, &in1};
  const char* names[] = {"INPUT0", "INPUT1"};
  for (int k = 0; k < 2; ++k) {
    FailIfErr(
        TRITONSERVER_InferenceRequestAddInput(
            request, names[k], TRITONSERVER_TYPE_INT32, shape, 2),
        "add input");
    FailIfErr(
        TRITONSERVER_InferenceRequestAppendInputData(
            request, names[k], data[k]->data(), 16 * 4,
            TRITONSERVER_MEMORY_CPU, 0),
        "input data");
  }
  FailIfErr(
      TRITONSERVER_InferenceRequestAddRequestedOutput(request, "OUTPUT0"),
      "output0");
  FailIfErr(
      TRITONSERVER_InferenceRequestAddRequestedOutput(request, "OUTPUT1"),
      "output1");
  for (int n = 0; n < inferences; ++n) {
    std::promise<void> released;
    std::future<void> release_done = released.get_future();
    FailIfErr(
        TRITONSERVER_InferenceRequestSetReleaseCallback(
            request, InferRequestComplete, &released),
        "release callback");
    auto* p = new std::promise<TRITONSERVER_InferenceResponse*>();
    std::future<TRITONSERVER_InferenceResponse*> done = p->get_future();
    FailIfErr(
        TRITONSERVER_InferenceRequestSetResponseCallback(
            request, allocator, nullptr, InferResponseComplete, p),
        "response callback");
    FailIfErr(
        TRITONSERVER_ServerInferAsync(server, request, nullptr), "infer");
    TRITONSERVER_InferenceResponse* response = done.get();
    release_done.wait();
    Check(response, in0, in1, model);
    FailIfErr(TRITONSERVER_InferenceResponseDelete(response), "response delete");
  }
  FailIfErr(TRITONSERVER_InferenceRequestDelete(request), "request delete");
}

void
OneServer(
    const std::string& backends, const std::string& common,
    const std::string& own, const std::string& own_model, int index,
    int inferences)
{
  TRITONSERVER_ServerOptions* options = nullptr;
  FailIfErr(TRITONSERVER_ServerOptionsNew(&options), "options new");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetModelRepositoryPath(options, common.c_str()),
      "repository");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetModelRepositoryPath(options, own.c_str()),
      "repository");
  std::string id = "multi_server_" + std::to_string(index);
  FailIfErr(
      TRITONSERVER_ServerOptionsSetServerId(options, id.c_str()), "server id");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetModelControlMode(
          options, TRITONSERVER_MODEL_CONTROL_EXPLICIT),
      "control mode");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetBackendDirectory(options, backends.c_str()),
      "backends");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetStrictReadiness(options, true), "readiness");
  FailIfErr(TRITONSERVER_ServerOptionsSetMetrics(options, false), "metrics");
  FailIfErr(TRITONSERVER_ServerOptionsSetLogInfo(options, false), "log info");
  FailIfErr(
      TRITONSERVER_ServerOptionsSetModelLoadRetryCount(options, 0), "retries");
  using clock = std::chrono::steady_clock;
  std::vector<std::pair<const char*, clock::time_point>> marks{
      {"start", clock::now()}};
  TRITONSERVER_Server* server = nullptr;
  {
    std::lock_guard<std::mutex> lk(new_delete);
    FailIfErr(TRITONSERVER_ServerNew(&server, options), "server new");
  }
  FailIfErr(TRITONSERVER_ServerOptionsDelete(options), "options delete");

  TRITONSERVER_ResponseAllocator* allocator = nullptr;
  FailIfErr(
      TRITONSERVER_ResponseAllocatorNew(
          &allocator, ResponseAlloc, ResponseRelease, nullptr),
      "allocator");
  marks.emplace_back("server_new", clock::now());
  const std::string models[] = {"simple1", own_model};
  for (const auto& m : models) {
    FailIfErr(TRITONSERVER_ServerLoadModel(server, m.c_str()), "load " + m);
  }
  marks.emplace_back("load", clock::now());
  for (const auto& m : models) {
    Infer(server, allocator, m, inferences);
  }
  marks.emplace_back("infer", clock::now());
  for (const auto& m : models) {
    FailIfErr(TRITONSERVER_ServerUnloadModel(server, m.c_str()), "unload " + m);
  }
  marks.emplace_back("unload", clock::now());
  FailIfErr(TRITONSERVER_ResponseAllocatorDelete(allocator), "allocator delete");
  FailIfErr(TRITONSERVER_ServerStop(server), "stop");
  marks.emplace_back("stop", clock::now());
  {
    std::lock_guard<std::mutex> lk(new_delete);
    FailIfErr(TRITONSERVER_ServerDelete(server), "server delete");
  }
  marks.emplace_back("delete", clock::now());
  std::string line = "phases_s " + std::to_string(index);
  for (size_t k = 1; k < marks.size(); ++k) {
    std::chrono::duration<double> d = marks[k].second - marks[k - 1].second;
    line += std::string(" ") + marks[k].first + "=" + std::to_string(d.count());
  }
  std::lock_guard<std::mutex> lk(fail_lock);
  std::cout << line << std::endl;
}

}  // namespace

int
main(int argc, char** argv)
{
  if (argc < 6) {
    std::cerr << "usage: " << argv[0]
              << " <backends dir> <iterations> <inferences per model>"
                 " <common repo> <instance repo>..."
              << std::endl;
    return 2;
  }
  const std::string backends = argv[1];
  const int iterations = std::atoi(argv[2]);
  const int inferences = std::atoi(argv[3]);
  const std::string common = argv[4];
  std::vector<std::string> own(argv + 5, argv + argc);

  uint32_t major = 0, minor = 0;
  FailIfErr(TRITONSERVER_ApiVersion(&major, &minor), "api version");
  if (major != TRITONSERVER_API_VERSION_MAJOR ||
      minor < TRITONSERVER_API_VERSION_MINOR) {
    Fail("libtritonserver API " + std::to_string(major) + "." +
         std::to_string(minor) + " is older than this header's");
  }
  for (int it = 0; it < iterations; ++it) {
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (size_t i = 0; i < own.size(); ++i) {
      std::string model = "simple" + std::to_string(i + 2);
      threads.emplace_back(
          OneServer, backends, common, own[i], model, int(i), inferences);
    }
    for (auto& t : threads) {
      t.join();
    }
    std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    std::cout << "iteration_s " << took.count() << std::endl;
  }
  return 0;
}
