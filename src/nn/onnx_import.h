// ONNX models (what torch.onnx.export writes) into the model graph (nn/graph.h), read with
// Debian's libonnx (its protobuf classes: no hand-written protobuf parser). Built as its own
// library (pfhe_onnx) so that only programs that import link protobuf.
//
// Operators: Conv (square kernel, equal strides and pads, group 1, no dilation),
// BatchNormalization, Gemm (a torch Linear: transB = 1, alpha = beta = 1), MatMul by a
// constant matrix (with the bias of a following Add: one linear layer), Add and Sub
// of two computed values (residual joins), element-wise polynomial arithmetic on one value
// (BatchNormalization, Mul of a value by itself or by a constant, Div by a constant, Pow
// with an integer exponent 1-8, Add and Sub of a constant or of polynomials of the same
// value; constants are scalars or per channel (torch's [1, C, 1, 1]): a chain such as
// a*x*x + b*x + c is followed symbolically (nn/onnx_elementwise.h) and becomes one node when
// something else reads it: a BatchNorm, a polynomial activation, or with per-channel
// coefficients of degree 2 a Quadratic, which is how torch's HerPN imports), element-wise
// arithmetic of constants (folded), AveragePool (no padding),
// GlobalAveragePool, Flatten (axis 1), Reshape to a flat vector ((1, -1) or (1, n), a
// constant shape), Identity and Dropout (inference: the identity), Slice and Split of the
// height and width (step 1; torch's one Slice per axis compose into one Crop node: the
// patches of a PatchCNN written in torch) and of the channels (a window of channels is read
// only by a convolution, which then reads all channels with zero weights on the others),
// Concat of flat vectors along axis 1 read only by a Gemm (one Linear per part with its
// columns of the weight and an equal share of the bias, summed: per-patch head blocks the
// compiler puts in lanes), Concat of feature maps along the channels read only by a Conv
// (one convolution per part with its channels' weights, summed).
// Anything else is refused with one line naming the node, its operator and what to use
// instead (ReLU and other non-polynomial activations: a polynomial activation; MaxPool:
// AveragePool). Weights come from initializers or Constant nodes (float32 or float64,
// inline or raw data, or ONNX external data files next to the model, read by
// import_onnx_file only: a location may not leave the model's directory).
#pragma once
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "nn/graph.h"

namespace pfhe::nn {

class OnnxImportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `what` names the model in errors (its path). The input must be one (1 or dynamic, C, H,
// W) tensor; the graph's output must be the last node computed.
Graph import_onnx(std::span<const std::uint8_t> bytes, const std::string& what);
Graph import_onnx_file(const std::string& path);

}  // namespace pfhe::nn
