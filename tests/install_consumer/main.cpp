// Encrypts, squares and decrypts one value through the installed package.
#include <cmath>
#include <cstdio>

#include "ckks/encoder.h"
#include "ckks/encryptor.h"
#include "ckks/evaluator.h"
#include "ckks/keygen.h"

int main() {
  using namespace pfhe::ckks;
  ParameterSpec spec;
  spec.log_n = 12;
  spec.q_bits = {38, 30};
  spec.p_bits = {38};
  Context ctx(Parameters::create(spec));
  KeyGenerator kg(ctx);
  const RelinKey rlk = kg.create_relin_key();
  Encoder enc(ctx);
  Encryptor encryptor(ctx, kg.secret_key());
  Decryptor decryptor(ctx, kg.secret_key());
  Evaluator eval(ctx, &rlk);
  const std::vector<double> x = {1.5};
  Ciphertext c = eval.square_relin(encryptor.encrypt(enc.encode(x, 1, std::ldexp(1.0, 30))));
  eval.rescale_inplace(c);
  const double got = enc.decode_real(decryptor.decrypt(c))[0];
  std::printf("1.5^2 = %.6f\n", got);
  return std::fabs(got - 2.25) < 1e-3 ? 0 : 1;
}
