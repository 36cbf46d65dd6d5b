// The usual visitor of several lambdas for std::visit over a variant of node or step kinds.
#pragma once

namespace pfhe::nn {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
// Needed by clang versions without aggregate deduction (the fuzz build).
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace pfhe::nn
