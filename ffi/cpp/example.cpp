// Same program as ffi/c/example.c, in C++ with the RAII wrapper; prints greedy ids for comparison.
// usage: example CHECKPOINT_DIR [ADAPTER_PATH] [PROMPT]
#include <iostream>

#include "graftlm.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " CHECKPOINT_DIR [ADAPTER_PATH] [PROMPT]\n";
        return 2;
    }
    try {
        graftlm::Model model(argv[1]);
        if (argc > 2 && argv[2][0]) model.attach(model.load_adapter(argv[2]));
        std::string prompt = argc > 3 ? argv[3] : "The Python interpreter";
        std::cout << prompt;
        auto result = model.generate(prompt, graftlm::Params().temperature(0).max_new_tokens(40),
                                     [](const std::string &piece) {
                                         std::cout << piece << std::flush;
                                         return true;
                                     });
        std::cout << "\nids:";
        for (auto id : result.ids) std::cout << ' ' << id;
        std::cout << "\n";
        // The same prompt twice in one batch: both equal the single generation.
        auto batch = model.generate_batch({{prompt, ""}, {prompt, ""}},
                                          graftlm::Params().temperature(0).max_new_tokens(40));
        if (batch.size() != 2 || batch[0].ids != result.ids || batch[1].ids != result.ids) {
            std::cerr << "batch results differ from the single generation\n";
            return 1;
        }
        try {
            graftlm::Model missing("/no/such/model");
        } catch (const graftlm::Error &e) {
            if (e.status() != GRAFTLM_ERR_NOT_FOUND) return 1;
        }
        // An exception thrown by the callback stops the generation and reaches the caller; a
        // call back into the same model from the callback is refused (BUSY), never a deadlock.
        try {
            model.generate(prompt, graftlm::Params().max_new_tokens(8), [&](const std::string &) -> bool {
                try {
                    model.generate("x", graftlm::Params().max_new_tokens(1));
                } catch (const graftlm::Error &e) {
                    if (e.status() == GRAFTLM_ERR_BUSY) throw std::runtime_error("busy as documented");
                }
                return true;
            });
            std::cerr << "the callback's exception was lost\n";
            return 1;
        } catch (const std::runtime_error &e) {
            if (std::string(e.what()) != "busy as documented") {
                std::cerr << "unexpected: " << e.what() << "\n";
                return 1;
            }
        }
    } catch (const graftlm::Error &e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
