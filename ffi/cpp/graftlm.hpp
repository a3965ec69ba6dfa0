// graftlm.hpp — header-only C++17 RAII wrapper over the graftlm C API (include/graftlm.h).
// Handles are move-only and freed in destructors; failing calls throw graftlm::Error carrying the
// status and graftlm_last_error(). A graftlm::Model may be shared by several threads.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "graftlm.h"

namespace graftlm {

class Error : public std::runtime_error {
  public:
    Error(graftlm_status status, const std::string &what) : std::runtime_error(what), status_(status) {}
    graftlm_status status() const noexcept { return status_; }

  private:
    graftlm_status status_;
};

inline void check(graftlm_status s) {
    if (s != GRAFTLM_OK) {
        const char *msg = graftlm_last_error();
        throw Error(s, std::string(graftlm_status_str(s)) + ": " + (msg ? msg : ""));
    }
}

/// Sets how many threads the CPU kernels run on (1 to 1024), before the first model loads and
/// before threads(): the pool then keeps its size (see graftlm_set_threads). Throws
/// graftlm::Error otherwise.
inline void set_threads(size_t n) { check(graftlm_set_threads(n)); }

/// How many threads the CPU kernels run on (this starts the pool, fixing its size).
inline size_t threads() { return graftlm_threads(); }

struct Params {
    graftlm_gen_params raw = graftlm_gen_params_default();
    Params &max_new_tokens(uint32_t n) { raw.max_new_tokens = n; return *this; }
    Params &temperature(float t) { raw.temperature = t; return *this; }
    Params &top_k(uint32_t k) { raw.top_k = k; return *this; }
    Params &top_p(float p) { raw.top_p = p; return *this; }
    Params &seed(uint64_t s) { raw.seed = s; return *this; }
    Params &no_prompt_style(bool r = true) { raw.raw = r; return *this; }
};

struct Result {
    std::string text;
    std::vector<uint32_t> ids;
    std::string stop_reason;
};

namespace detail {
struct ModelFree { void operator()(graftlm_model *m) const noexcept { graftlm_model_free(m); } };
struct AdapterFree { void operator()(graftlm_adapter *a) const noexcept { graftlm_adapter_free(a); } };
struct ResultFree { void operator()(graftlm_result *r) const noexcept { graftlm_result_free(r); } };

inline Result take(graftlm_result *raw) {
    std::unique_ptr<graftlm_result, ResultFree> r(raw);
    size_t n = 0;
    const uint32_t *ids = graftlm_result_ids(r.get(), &n);
    return Result{graftlm_result_text(r.get()), std::vector<uint32_t>(ids, ids + n), graftlm_result_stop_reason(r.get())};
}

/// What a streaming call passes its C callback: the caller's function, and the exception it
/// threw, if any (kept here and rethrown once the C call has returned: an exception must never
/// unwind through graftlm's frames).
struct Stream {
    std::function<bool(const std::string &)> *on_piece;
    std::exception_ptr error;
};

inline bool trampoline(void *user_data, const char *piece, size_t len) noexcept {
    auto *s = static_cast<Stream *>(user_data);
    try {
        return (*s->on_piece)(std::string(piece, len));
    } catch (...) {
        s->error = std::current_exception();
        return false;  // stops the generation; rethrown by the caller
    }
}
}  // namespace detail

class Adapter {
  public:
    explicit Adapter(graftlm_adapter *a) : a_(a) {}
    std::string name() const { return graftlm_adapter_name(a_.get()); }
    const graftlm_adapter *get() const noexcept { return a_.get(); }

  private:
    std::unique_ptr<graftlm_adapter, detail::AdapterFree> a_;
};

class Model {
  public:
    /// `weight_dtype`: "auto" (also nullptr: as stored when bf16/f16, else f32), "f32", "bf16", "f16".
    explicit Model(const std::string &path, const char *weight_dtype = nullptr) {
        graftlm_model *m = nullptr;
        check(graftlm_model_load_with(path.c_str(), weight_dtype, &m));
        m_.reset(m);
    }

    Adapter load_adapter(const std::string &path, int64_t step = -1, const char *name = nullptr) const {
        graftlm_adapter *a = nullptr;
        check(graftlm_adapter_load(m_.get(), path.c_str(), step, name, &a));
        return Adapter(a);
    }
    void attach(const Adapter &a, float scale = 1.0f, bool merged = false) { check(graftlm_model_attach(m_.get(), a.get(), scale, merged)); }
    void detach(const std::string &name) { check(graftlm_model_detach(m_.get(), name.c_str())); }
    void activate(const std::string &name, bool active = true) { check(graftlm_model_activate(m_.get(), name.c_str(), active)); }
    void set_scale(const std::string &name, float scale) { check(graftlm_model_set_scale(m_.get(), name.c_str(), scale)); }
    void merge(const char *name = nullptr) { check(graftlm_model_merge(m_.get(), name)); }
    void unmerge(const char *name = nullptr) { check(graftlm_model_unmerge(m_.get(), name)); }
    /// `dir` must be absent or empty unless `force` (which replaces it whole).
    void export_merged(const std::string &dir, bool force = false) const {
        check(graftlm_model_export_merged_with(m_.get(), dir.c_str(), force ? GRAFTLM_EXPORT_FORCE : 0));
    }

    std::vector<uint32_t> tokenize(const std::string &text) const {
        size_t n = 0;
        graftlm_status s = graftlm_tokenize(m_.get(), text.c_str(), nullptr, 0, &n);
        if (s != GRAFTLM_OK && s != GRAFTLM_ERR_BUFFER_TOO_SMALL) check(s);
        std::vector<uint32_t> ids(n);
        check(graftlm_tokenize(m_.get(), text.c_str(), ids.data(), ids.size(), &n));
        ids.resize(n);
        return ids;
    }
    std::string detokenize(const std::vector<uint32_t> &ids) const {
        char *out = nullptr;
        check(graftlm_detokenize(m_.get(), ids.data(), ids.size(), &out));
        std::string s(out);
        graftlm_string_free(out);
        return s;
    }

    Result generate(const std::string &prompt, const Params &p = Params()) const {
        graftlm_result *r = nullptr;
        check(graftlm_generate(m_.get(), prompt.c_str(), &p.raw, &r));
        return detail::take(r);
    }
    /// `on_piece` returns false to stop. An exception it throws stops the generation and is
    /// rethrown here. Calls from inside it into this same model that need the model (generate,
    /// attach, ...) throw graftlm::Error with GRAFTLM_ERR_BUSY; tokenize works.
    Result generate(const std::string &prompt, const Params &p, std::function<bool(const std::string &)> on_piece) const {
        graftlm_result *r = nullptr;
        detail::Stream stream{&on_piece, nullptr};
        graftlm_status s = graftlm_generate_stream(m_.get(), prompt.c_str(), &p.raw, detail::trampoline, &stream, &r);
        std::unique_ptr<graftlm_result, detail::ResultFree> owned(r);
        if (stream.error) std::rethrow_exception(stream.error);
        check(s);
        return detail::take(owned.release());
    }

    /// One request of `generate_batch`: a prompt and the attached adapter it uses ("": the base).
    struct Request {
        std::string prompt;
        std::string adapter;
    };
    /// All requests decoded together (one forward per step for the batch), each with its own
    /// adapter; each result equals `generate` with only that adapter active.
    std::vector<Result> generate_batch(const std::vector<Request> &requests, const Params &p = Params()) const {
        std::vector<graftlm_batch_request> raw;
        raw.reserve(requests.size());
        for (const auto &q : requests)
            raw.push_back({q.prompt.c_str(), q.adapter.empty() ? nullptr : q.adapter.c_str()});
        std::vector<graftlm_result *> out(requests.size(), nullptr);
        check(graftlm_generate_batch(m_.get(), raw.data(), raw.size(), &p.raw, nullptr, nullptr, out.data()));
        std::vector<std::unique_ptr<graftlm_result, detail::ResultFree>> owned;
        for (auto *r : out) owned.emplace_back(r);  // freed even if a `take` below throws
        std::vector<Result> results;
        for (auto &r : owned) results.push_back(detail::take(r.release()));
        return results;
    }

  private:
    std::unique_ptr<graftlm_model, detail::ModelFree> m_;
};

}  // namespace graftlm
