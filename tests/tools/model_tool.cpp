// Test helper for the exporter round trips:
//   model_tool make OUT.pfhm        write a small synthetic PatchCNN
//   model_tool compare A.pfhm B.pfhm  exit 0 iff both load and compute the same embeddings
//   model_tool graph-logits G.pfhm IN.f64  the float64 forward of a graph model file on one
//                                   input (raw little-endian doubles), one output per line
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "nn/graph_file.h"
#include "nn/model_file.h"
#include "nn/synthetic.h"

using namespace pfhe::nn;

int main(int argc, char** argv) {
  try {
    if (argc == 3 && !std::strcmp(argv[1], "make")) {
      BackboneShape shape;
      shape.stem_channels = 4;
      shape.blocks = {{4, 1}, {8, 2}, {8, 1}};
      save_model_file(make_synthetic_patch_cnn(shape, 2, 8, 8, 21, synthetic_images(128, {3, 16, 16}, 22)), argv[2]);
      return 0;
    }
    if (argc == 4 && !std::strcmp(argv[1], "compare")) {
      const PatchCNN a = load_model_file(argv[2]), b = load_model_file(argv[3]);
      for (const Tensor& img : synthetic_images(4, a.image_shape(), 23)) {
        const Tensor x = a.normalized(img), y = b.normalized(img);
        for (std::size_t i = 0; i < x.data.size(); ++i)
          if (x.data[i] != y.data[i]) {
            std::fprintf(stderr, "embeddings differ at %zu: %.9g vs %.9g\n", i, x.data[i], y.data[i]);
            return 1;
          }
      }
      std::printf("models compute identical embeddings\n");
      return 0;
    }
    if (argc == 4 && !std::strcmp(argv[1], "graph-logits")) {
      const Graph g = load_graph_file(argv[2]);
      std::ifstream in(argv[3], std::ios::binary);
      const std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      Tensor x(g.input_shape());
      if (raw.size() != x.data.size() * sizeof(double)) throw std::runtime_error("input size does not match the graph");
      std::memcpy(x.data.data(), raw.data(), raw.size());
      for (const double v : g.forward(x).data) std::printf("%.17g\n", v);
      return 0;
    }
    std::fprintf(stderr, "usage: model_tool make OUT | model_tool compare A B | model_tool graph-logits G IN\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_tool: %s\n", e.what());
    return 1;
  }
}
