// Writes one valid object of every type (for the fuzz target's parameter set) into the
// directory given as argument: the seed corpus of fuzz_loaders.
#include <cstdio>
#include <string>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/keygen.h"
#include "ckks/linear_transform.h"
#include "ckks/ring_switch.h"
#include "ckks/serialization.h"
#include "nn/compiled_graph.h"
#include "nn/graph_file.h"
#include "nn/model_file.h"
#include "nn/patch_cnn.h"
#include "nn/synthetic.h"
#include "runtime/bundle.h"
#include "runtime/client_server.h"

using namespace pfhe::ckks;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  ParameterSpec spec;
  spec.log_n = 6;
  spec.q_bits = {40, 30};
  spec.p_bits = {40};
  const Context ctx(Parameters::create_insecure_for_testing(spec));
  Encoder enc(ctx);
  KeyGenerator kg(ctx);
  Encryptor encryptor(ctx, kg.secret_key());
  const std::vector<double> v = {0.5, -0.25, 1.0, 2.0};
  const Plaintext pt = enc.encode(v, 1, 1 << 20);
  write_file(dir + "/parameters", save_parameters(ctx.params()));
  write_file(dir + "/plaintext", save(ctx, pt));
  write_file(dir + "/ciphertext", save(ctx, encryptor.encrypt(pt)));
  write_file(dir + "/ciphertext_zstd", save(ctx, encryptor.encrypt(pt), {true}));
  write_file(dir + "/seeded", save(ctx, encryptor.encrypt_seeded(pt)));
  write_file(dir + "/secret_key", save(ctx, kg.secret_key()));
  write_file(dir + "/public_key", save(ctx, kg.create_public_key()));
  write_file(dir + "/relin_key", save(ctx, kg.create_relin_key()));
  write_file(dir + "/galois_keys", save(ctx, kg.create_galois_keys({1, -1}, true)));
  // A tiny model file (1x1 grid of 4x4 patches, one block).
  pfhe::nn::BackboneShape shape;
  shape.stem_channels = 2;
  shape.blocks = {{2, 1}};
  const auto model = pfhe::nn::make_synthetic_patch_cnn(shape, 1, 4, 2, 1, pfhe::nn::synthetic_images(128, {3, 4, 4}, 2));
  write_file(dir + "/model", pfhe::nn::save_model(model));
  // Linear transforms (the bulk of a compiled model), one with encoded diagonals and one
  // with just-in-time coefficients (8-aligned arrays behind zero padding).
  Diagonals diagonals;
  for (const long k : {0L, 1L, 5L}) diagonals[k] = std::vector<std::complex<double>>(32, {0.25 * static_cast<double>(k + 1), 0.0});
  for (const auto storage : {DiagonalStorage::kEncoded, DiagonalStorage::kJustInTime}) {
    ByteWriter w;
    LinearTransform(enc, diagonals, 32, 1, 0, 0, storage).save(w);
    write_file(dir + (storage == DiagonalStorage::kEncoded ? "/transform_encoded" : "/transform_jit"), w.bytes());
  }
  // Compiled graphs with every step kind that fits one level: shift, sum and linear; and a
  // polynomial.
  {
    using namespace pfhe::nn;
    Graph linear_graph({2, 2, 2});
    std::size_t x = linear_graph.add("bn", BatchNorm{{0.1, -0.2}, {1.0, 2.0}, {}, {0.5, 0.25}, 1e-5}, 0);
    x = linear_graph.add("sum", Add{}, {x, x});
    x = linear_graph.add("flatten", Flatten{}, x);
    linear_graph.add("head", Linear{8, 3, std::vector<double>(24, 0.125), {0.0, 1.0, 2.0}}, x);
    write_file(dir + "/graph_linear", CompiledGraph::compile(linear_graph, enc, 1, 1 << 20, 0).save());
    write_file(dir + "/graph_model_linear", pfhe::nn::save_graph(linear_graph));
    Graph poly_graph({2, 2, 2});
    poly_graph.add("p", PolynomialActivation{{0.1, 0.5}}, 0);
    write_file(dir + "/graph_polynomial", CompiledGraph::compile(poly_graph, enc, 1, 1 << 20).save());
    write_file(dir + "/graph_model_polynomial", pfhe::nn::save_graph(poly_graph));
  }
  write_file(dir + "/bundle", pfhe::runtime::save_bundle({7, {save(ctx, encryptor.encrypt(pt)), save(ctx, pt)}}));
  // A client spec of the same shape as the CLI writes (JSON text).
  pfhe::runtime::ClientSpec client;
  client.fingerprint = ctx.params().fingerprint();
  client.image = {3, 4, 4};
  client.grid = 1;
  client.input_level = 1;
  client.input_scale = 1 << 20;
  client.input_layout = {{3, 4, 4}, 1, 32, 1};
  client.output_layout = {{2, 1, 1}, 1, 32, 16};
  client.rotation_levels = {{1, 1}, {-1, 1}};
  const std::string json = client.to_json();
  write_file(dir + "/client_spec", {reinterpret_cast<const std::uint8_t*>(json.data()), json.size()});
  // A ring switch at the top level with the one special prime: its switch-key context has
  // the fuzz parameters' primes (and fingerprint), so the key loads against them.
  const auto half_ring = pfhe::nn::HalfRing::make(ctx.params(), {1, 1});
  if (half_ring->switch_context.params().fingerprint() != ctx.params().fingerprint())
    throw std::logic_error("the switch key's parameters differ from the fuzz parameters");
  const KeyGenerator half_kg(half_ring->context);
  write_file(dir + "/ring_switch_key",
             save_switching_key(half_ring->switch_context,
                                  create_ring_switch_key(half_ring->switch_context, kg.secret_key(), half_ring->context,
                                                         half_kg.secret_key())));
  client.ring_switch = half_ring->choice;
  client.half_ring_fingerprint = half_ring->context.params().fingerprint();
  client.half_ring_rotation_levels = {{1, 1}};
  const std::string switching_json = client.to_json();
  write_file(dir + "/client_spec_ring_switch",
             {reinterpret_cast<const std::uint8_t*>(switching_json.data()), switching_json.size()});
  return 0;
}
