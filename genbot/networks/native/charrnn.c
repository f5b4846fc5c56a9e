/* A char-RNN's serving arithmetic in one native call: prompt reading, steps, decoding with sampling.
 *
 * Why this exists: on a CPU a served char-RNN step is a few small matrix-vector products and a
 * few dozen element-wise operations on vectors of a few hundred numbers. Dispatched one by one
 * from Python each costs microseconds of overhead, more than the arithmetic; here a whole step of
 * every layer, or a run of steps with the sampling in between, is one call.
 *
 * Exactness: every product below sums each output over its inputs in one fixed order, one vector
 * lane per output, whatever the number of rows in the call or how rows are grouped into register
 * blocks. So a row's result never depends on the other rows, and a prompt read in chunks gives
 * what it gives read whole (the engine's batch invariance, by construction rather than by luck of
 * a BLAS kernel). The same holds for the element-wise functions, which work lane by lane.
 *
 * Portability: plain C with GCC/Clang vector extensions, compiled on the machine that runs it
 * (``-march=native``): the compiler maps the vectors to whatever SIMD the CPU has. Weights are
 * stored as float32 or, where the CPU converts them in one instruction (F16C, arm64), as float16
 * (half the bytes read per character; arithmetic stays float32). Built and loaded by
 * ``native/__init__.py``, which also passes the weights in the layout below.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Eight float32 lanes: AVX's registers, two NEON registers; one width on every CPU, so the same
 * code (and summation order) runs everywhere. */
#define VEC 8
#define PANEL_VECS 2
#define PANEL (VEC * PANEL_VECS) /* outputs per packed panel of weights */
#define BLOCK_ROWS 6              /* rows per register block of a batch */
#define TILE_BLOCKS 24            /* register blocks per tile of a large product: 144 rows */
#define CONVERT_IN_BLOCK_ROWS 24  /* up to this many rows, float16 weights are converted in each block */

typedef float vf __attribute__((vector_size(VEC * 4)));
typedef int32_t vi __attribute__((vector_size(VEC * 4)));
typedef float vf_u __attribute__((vector_size(VEC * 4), aligned(4), may_alias)); /* at any float */

/* float16 weights where the CPU converts a vector of them in one instruction (F16C on x86-64,
 * every arm64); elsewhere only float32 is offered. */
#if defined(__F16C__)
#include <immintrin.h>
#define HAVE_F16 1
#elif defined(__aarch64__) && defined(__FLT16_MAX__)
#define HAVE_F16 1
typedef _Float16 vh_u __attribute__((vector_size(VEC * 2), aligned(2), may_alias));
#else
#define HAVE_F16 0
#endif

/* Where the compiler targets AVX-512, products can also run on 512-bit vectors, one panel per
 * register. Each output is still one lane summing over k in the same order, so the numbers are
 * the same bit for bit; only the speed differs, and not the same way on every CPU (full-width
 * units, double-pumped ones, clocks that drop under 512-bit work): gb_calibrate times both here. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_WIDE 1
typedef float vw __attribute__((vector_size(PANEL * 4)));
typedef float vw_u __attribute__((vector_size(PANEL * 4), aligned(4), may_alias));
#else
#define HAVE_WIDE 0
#endif
enum { WIDE_BLOCKS = 1, WIDE_LONE = 2 };
/* Which products run wide: set once when the library is loaded (gb_calibrate or gb_set_wide). */
static int wide_mode = 0;

enum { CELL_RNN = 0, CELL_LSTM = 1, CELL_GRU = 2 };
enum { W_F32 = 0, W_F16 = 1 };
enum { OK = 0, E_NOMEM = 1, E_ARGS = 2 };

/* The weights of one network, packed by the caller (see ``native/__init__.py``). A packed matrix
 * of K inputs and N outputs is ceil(N / PANEL) panels, each K rows of PANEL outputs, zero-padded. */
typedef struct {
    int32_t cell, layers, hidden, vocab, gates, wtype;
    const float *table;         /* (vocab, gates): layer 0's input product and biases per character */
    const void *const *w_ih;    /* per layer (layer 0: unused), packed hidden -> gates */
    const void *const *w_hh;    /* per layer, packed hidden -> gates */
    const float *const *b_in;   /* per layer (layer 0: unused), (gates): input bias (+ hidden bias but for GRU) */
    const float *const *b_hh;   /* per layer, (gates): GRU's hidden bias; NULL otherwise */
    const void *head_w;         /* packed hidden -> vocab */
    const float *head_b;        /* (padded vocab) */
} net_t;

int gb_panel(void) { return PANEL; }
int gb_has_f16(void) { return HAVE_F16; }
int gb_has_wide(void) { return HAVE_WIDE; }

/* Run products wide where mode says so (WIDE_BLOCKS, WIDE_LONE; only where HAVE_WIDE); the mode set. */
int gb_set_wide(int mode) { return wide_mode = HAVE_WIDE ? mode & (WIDE_BLOCKS | WIDE_LONE) : 0; }

static inline int padded(int n) { return (n + PANEL - 1) / PANEL * PANEL; }

static inline vf vload(const float *p) { return *(const vf_u *)p; }
static inline void vstore(float *p, vf v) { *(vf_u *)p = v; }
static inline vf vsplat(float x) { return (vf){x, x, x, x, x, x, x, x}; }
/* a where m is set, else b (m: a comparison's all-ones / all-zeros lanes) */
static inline vf vselect(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

/* The first n < VEC floats at p, the other lanes zero; and the way back. */
static inline vf vload_n(const float *p, int n)
{
    float buf[VEC] = {0};
    memcpy(buf, p, n * sizeof(float));
    return vload(buf);
}
static inline void vstore_n(float *p, vf v, int n)
{
    float buf[VEC];
    vstore(buf, v);
    memcpy(p, buf, n * sizeof(float));
}

/* ----- products: Y[r, :N] += X[r, :K] @ W (W packed), each output summed over k in order ------- */

#if HAVE_F16
static inline vf load_f16(const uint16_t *p)
{
#if defined(__F16C__)
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    return __builtin_convertvector(*(const vh_u *)p, vf);
#endif
}
#endif

/* VEC weights from W (float32, or float16 where f16: a constant wherever this is inlined). */
static inline __attribute__((always_inline)) vf wvec(const void *W, size_t i, int f16)
{
#if HAVE_F16
    if (f16) return load_f16((const uint16_t *)W + i);
#endif
    (void)f16;
    return vload((const float *)W + i);
}

/* Register blocks, each output lane summed over k in order: acc starts from Y (the caller put the
 * bias there). The accumulators are named variables so that they stay in registers: twelve
 * vectors, with the weights and one broadcast input, fill the sixteen of AVX2. */
#define ACC(a, y) vf a##0 = vload((y)), a##1 = vload((y) + VEC)
#define FMA(a, x, w0, w1) a##0 += (x) * (w0), a##1 += (x) * (w1)
#define PUT(a, y) vstore((y), a##0), vstore((y) + VEC, a##1)

/* R rows (1 to 6) by one panel: for batches, each weight loaded (and converted, where f16) once for
 * R rows. R and f16 are constants wherever this is inlined, so the unused accumulators vanish. */
#define ROW(i) const float *x##i = X + (R > i ? i : 0) * (size_t)ldx
#define ACC_IF(i, a) vf a##0 = R > i ? vload(Y + i * (size_t)ldy) : vsplat(0), a##1 = R > i ? vload(Y + i * (size_t)ldy + VEC) : vsplat(0)
#define PUT_IF(i, a) if (R > i) PUT(a, Y + i * (size_t)ldy)
/* Row i's input x_i[k] broadcast (SPLAT) into its accumulators, for each of the R rows. */
#define ROWS_FMA(SPLAT)                                                                               \
    do {                                                                                              \
        x = SPLAT(x0[k]), FMA(a, x, w0, w1);                                                          \
        if (R > 1) x = SPLAT(x1[k]), FMA(b, x, w0, w1);                                               \
        if (R > 2) x = SPLAT(x2[k]), FMA(c, x, w0, w1);                                               \
        if (R > 3) x = SPLAT(x3[k]), FMA(d, x, w0, w1);                                               \
        if (R > 4) x = SPLAT(x4[k]), FMA(e, x, w0, w1);                                               \
        if (R > 5) x = SPLAT(x5[k]), FMA(f, x, w0, w1);                                               \
    } while (0)
static inline __attribute__((always_inline)) void block_rx1(int R, int f16, int K, const float *X, int ldx,
                                                             const void *W, float *Y, int ldy)
{
    ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5);
    ACC_IF(0, a); ACC_IF(1, b); ACC_IF(2, c); ACC_IF(3, d); ACC_IF(4, e); ACC_IF(5, f);
    for (int k = 0; k < K; k++) {
        vf w0 = wvec(W, (size_t)k * PANEL, f16), w1 = wvec(W, (size_t)k * PANEL + VEC, f16), x;
        ROWS_FMA(vsplat);
    }
    PUT_IF(0, a); PUT_IF(1, b); PUT_IF(2, c); PUT_IF(3, d); PUT_IF(4, e); PUT_IF(5, f);
}

/* One row by six panels, weights as stored: for a lone row (twelve independent sums keep loads in
 * flight while the product waits on memory). */
#define BLOCK_1x6(NAME, WT, LOADW)                                                                    \
    static void NAME(int K, const float *X, const WT *W, size_t ps, float *Y)                        \
    {                                                                                                 \
        ACC(a, Y); ACC(b, Y + PANEL); ACC(c, Y + 2 * PANEL);                                          \
        ACC(d, Y + 3 * PANEL); ACC(e, Y + 4 * PANEL); ACC(f, Y + 5 * PANEL);                          \
        for (int k = 0; k < K; k++) {                                                                 \
            const WT *w = W + (size_t)k * PANEL;                                                      \
            vf x = vsplat(X[k]);                                                                      \
            FMA(a, x, LOADW(w), LOADW(w + VEC));                                                      \
            FMA(b, x, LOADW(w + ps), LOADW(w + ps + VEC));                                            \
            FMA(c, x, LOADW(w + 2 * ps), LOADW(w + 2 * ps + VEC));                                    \
            FMA(d, x, LOADW(w + 3 * ps), LOADW(w + 3 * ps + VEC));                                    \
            FMA(e, x, LOADW(w + 4 * ps), LOADW(w + 4 * ps + VEC));                                    \
            FMA(f, x, LOADW(w + 5 * ps), LOADW(w + 5 * ps + VEC));                                    \
        }                                                                                             \
        PUT(a, Y); PUT(b, Y + PANEL); PUT(c, Y + 2 * PANEL);                                          \
        PUT(d, Y + 3 * PANEL); PUT(e, Y + 4 * PANEL); PUT(f, Y + 5 * PANEL);                          \
    }

/* One row by one panel: the panels left. */
#define BLOCK_1x1(NAME, WT, LOADW)                                                                    \
    static void NAME(int K, const float *X, const WT *W, float *Y)                                   \
    {                                                                                                 \
        ACC(a, Y);                                                                                    \
        for (int k = 0; k < K; k++) {                                                                 \
            const WT *w = W + (size_t)k * PANEL;                                                      \
            vf x = vsplat(X[k]);                                                                      \
            FMA(a, x, LOADW(w), LOADW(w + VEC));                                                      \
        }                                                                                             \
        PUT(a, Y);                                                                                    \
    }

#if HAVE_WIDE
static inline vw wload(const float *p) { return *(const vw_u *)p; }
static inline void wstore(float *p, vw v) { *(vw_u *)p = v; }
static inline vw wsplat(float x) { return (vw){0} + x; }
/* PANEL weights from W (float32, or float16 where f16). */
static inline __attribute__((always_inline)) vw wwvec(const void *W, size_t i, int f16)
{
#if HAVE_F16
    if (f16) return (vw)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + i)));
#endif
    (void)f16;
    return wload((const float *)W + i);
}
#define WPUT(a, y) wstore((y), a##0), wstore((y) + PANEL, a##1)

/* block_rx1 on 512-bit vectors, two panels (W0, W1 = W0 + K * PANEL) at a time: twelve
 * accumulators again for 6 rows. */
#define WACC_IF(i, a) vw a##0 = R > i ? wload(Y + i * (size_t)ldy) : wsplat(0), a##1 = R > i ? wload(Y + i * (size_t)ldy + PANEL) : wsplat(0)
#define WPUT_IF(i, a) if (R > i) WPUT(a, Y + i * (size_t)ldy)
static inline __attribute__((always_inline)) void wblock_rx2(int R, int f16, int K, const float *X, int ldx,
                                                              const void *W0, const void *W1, float *Y, int ldy)
{
    ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5);
    WACC_IF(0, a); WACC_IF(1, b); WACC_IF(2, c); WACC_IF(3, d); WACC_IF(4, e); WACC_IF(5, f);
    for (int k = 0; k < K; k++) {
        vw w0 = wwvec(W0, (size_t)k * PANEL, f16), w1 = wwvec(W1, (size_t)k * PANEL, f16), x;
        ROWS_FMA(wsplat);
    }
    WPUT_IF(0, a); WPUT_IF(1, b); WPUT_IF(2, c); WPUT_IF(3, d); WPUT_IF(4, e); WPUT_IF(5, f);
}

/* One row by twelve panels on 512-bit vectors, weights as stored. */
#define REP12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define W_ACC(i) vw a##i = wload(Y + i * PANEL);
#define W_PUT(i) wstore(Y + i * PANEL, a##i);
#define WBLOCK_1x12(NAME, WT)                                                                         \
    static void NAME(int K, const float *X, const WT *W, size_t ps, float *Y)                        \
    {                                                                                                 \
        REP12(W_ACC)                                                                                  \
        for (int k = 0; k < K; k++) {                                                                 \
            const WT *w = W + (size_t)k * PANEL;                                                      \
            vw x = wsplat(X[k]);                                                                      \
            REP12(W_FMA_##WT)                                                                         \
        }                                                                                             \
        REP12(W_PUT)                                                                                  \
    }
#define W_FMA_float(i) a##i += x * wload(w + i * ps);
WBLOCK_1x12(product_f32_1x12w, float)
#if HAVE_F16
#define W_FMA_uint16_t(i) a##i += x * wwvec(w, i * ps, 1);
WBLOCK_1x12(product_f16_1x12w, uint16_t)
#endif
#else /* never called: wide_mode stays 0 */
#define wblock_rx2(...) abort()
#define product_f32_1x12w(...) abort()
#define product_f16_1x12w(...) abort()
#endif

/* R = 1 to 6 rows of a batch through one panel (two where `two`) of float32 or (f16) float16
 * weights, ps floats or halves apart: each combination its own inlined copy. */
static void block(int R, int f16, int two, int K, const float *X, int ldx, const void *W, size_t ps, float *Y, int ldy)
{
    const void *W1 = f16 ? (const void *)((const uint16_t *)W + ps) : (const void *)((const float *)W + ps);
    (void)W1; /* (unused where nothing is wide) */
#define CASE(n, h)                                                                                    \
    case n:                                                                                           \
        if (two)                                                                                      \
            wblock_rx2(n, h, K, X, ldx, W, W1, Y, ldy);                                               \
        else                                                                                          \
            block_rx1(n, h, K, X, ldx, W, Y, ldy);                                                    \
        return;
    if (f16 && HAVE_F16)
        switch (R) { CASE(1, 1) CASE(2, 1) CASE(3, 1) CASE(4, 1) CASE(5, 1) CASE(6, 1) }
    else
        switch (R) { CASE(1, 0) CASE(2, 0) CASE(3, 0) CASE(4, 0) CASE(5, 0) CASE(6, 0) }
#undef CASE
}

/* Y[rows, :N] += X[rows, :K] @ W. A batch goes in blocks of up to BLOCK_ROWS rows, panel by panel
 * (two at a time on wide vectors): each panel (read once from memory, then from cache) through
 * every block of a tile of rows (which stays in cache too). A float16 panel is converted as each
 * block loads it where there are few blocks; for more it is first widened into `wide` (2 * K *
 * PANEL floats; the same numbers, converted once instead of once per block). A lone row reads
 * the weights as stored, twelve (wide) or six panels at a time. */
#define PRODUCT(NAME, WT)                                                                             \
    static void NAME(int rows, int K, int N, const float *X, int ldx, const WT *W, float *Y, int ldy, \
                     float *wide)                                                                     \
    {                                                                                                 \
        int panels = padded(N) / PANEL;                                                               \
        size_t ps = (size_t)K * PANEL;                                                                \
        /* two rows in 256-bit blocks keep too few sums in flight: two lone passes were faster */  \
        if (rows == 1 || (rows == 2 && !(wide_mode & WIDE_BLOCKS))) {                                 \
            for (int r = 0; r < rows; r++) {                                                          \
                const float *x = X + (size_t)r * ldx;                                                 \
                float *y = Y + (size_t)r * ldy;                                                       \
                int p = 0;                                                                            \
                if (wide_mode & WIDE_LONE)                                                            \
                    for (; p + 12 <= panels; p += 12) NAME##_1x12w(K, x, W + p * ps, ps, y + p * PANEL); \
                for (; p + 6 <= panels; p += 6) NAME##_1x6(K, x, W + p * ps, ps, y + p * PANEL);      \
                for (; p < panels; p++) NAME##_1x1(K, x, W + p * ps, y + p * PANEL);                  \
            }                                                                                         \
            return;                                                                                   \
        }                                                                                             \
        int f16 = sizeof(WT) == 2 && rows <= CONVERT_IN_BLOCK_ROWS;                                   \
        for (int r0 = 0; r0 < rows; r0 += TILE_BLOCKS * BLOCK_ROWS)                                   \
            for (int p = 0, two; p < panels; p += 1 + two) {                                          \
                two = (wide_mode & WIDE_BLOCKS) && p + 1 < panels;                                    \
                const void *panel = f16 ? (const void *)(W + p * ps) : NAME##_widen(W + p * ps, wide, (1 + two) * ps); \
                int tile = rows - r0 < TILE_BLOCKS * BLOCK_ROWS ? rows - r0 : TILE_BLOCKS * BLOCK_ROWS; \
                int blocks = (tile + BLOCK_ROWS - 1) / BLOCK_ROWS;                                    \
                for (int b = 0, r = r0; b < blocks; b++) {                                            \
                    int R = tile / blocks + (b < tile % blocks); /* even blocks: 8 rows are 4 + 4 */  \
                    block(R, f16, two, K, X + (size_t)r * ldx, ldx, panel, ps, Y + (size_t)r * ldy + p * PANEL, ldy); \
                    r += R;                                                                           \
                }                                                                                     \
            }                                                                                         \
    }

#define LOAD_F32(p) vload(p)
BLOCK_1x6(product_f32_1x6, float, LOAD_F32)
BLOCK_1x1(product_f32_1x1, float, LOAD_F32)
static const float *product_f32_widen(const float *w, float *out, size_t n) { (void)out, (void)n; return w; }
PRODUCT(product_f32, float)

#if HAVE_F16
static const float *product_f16_widen(const uint16_t *w, float *out, size_t n)
{
    for (size_t i = 0; i < n; i += VEC) vstore(out + i, load_f16(w + i));
    return out;
}
BLOCK_1x6(product_f16_1x6, uint16_t, load_f16)
BLOCK_1x1(product_f16_1x1, uint16_t, load_f16)
PRODUCT(product_f16, uint16_t)
#endif

/* Y[rows, N(padded)] += X[rows, hidden] @ W in the network's weight type (every product's inputs
 * are a layer's hidden units); wide: 2 * hidden * PANEL floats of scratch. */
static void product(const net_t *n, int rows, int N, const float *X, const void *W, float *Y, int ldy, float *wide)
{
    int K = n->hidden;
#if HAVE_F16
    if (n->wtype == W_F16) {
        product_f16(rows, K, N, X, K, (const uint16_t *)W, Y, ldy, wide);
        return;
    }
#endif
    product_f32(rows, K, N, X, K, (const float *)W, Y, ldy, wide);
}

/* ----- element-wise functions, lane by lane ------------------------------------------------------ */

/* exp(x) for float32 lanes: Cephes' polynomial after a reduction by ln 2 (~1 ulp). */
static inline vf vexp(vf x)
{
    const vf hi = vsplat(88.3762626647949f), lo = vsplat(-88.3762626647949f);
    x = vselect(x > hi, hi, x);
    x = vselect(x < lo, lo, x);
    vf fx = x * 1.44269504088896341f + 0.5f;
    vi n = __builtin_convertvector(fx, vi);
    vf fn = __builtin_convertvector(n, vf);
    fn = vselect(fn > fx, fn - 1.0f, fn); /* floor */
    n = __builtin_convertvector(fn, vi);
    x = x - fn * 0.693359375f;
    x = x - fn * -2.12194440e-4f;
    vf y = vsplat(1.9875691500E-4f);
    y = y * x + 8.3334519073E-3f;
    y = y * x + 4.1665795894E-2f;
    y = y * x + 1.6666665459E-1f;
    y = y * x + 5.0000001201E-1f;
    y = y * x * x + x + 1.0f;
    vi bits = (n + 127) << 23;
    vf scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

static inline vf vtanh(vf x)
{
    /* 1 - 2 / (exp(2x) + 1): exact limits at both ends, no cancellation where |x| is large. */
    return 1.0f - 2.0f / (vexp(x + x) + 1.0f);
}

/* Up to VEC lanes at p: a whole vector, or the n left at the end of a row (the rest zero). */
static inline vf ld(const float *p, int n) { return n == VEC ? vload(p) : vload_n(p, n); }
static inline void st(float *p, vf v, int n)
{
    if (n == VEC)
        vstore(p, v);
    else
        vstore_n(p, v, n);
}
#define LANES(j, H) (H - j < VEC ? H - j : VEC)

/* One LSTM update from gate pre-activations g (i, f, g, o blocks of H) and the cell c, in place. */
static void lstm_gates(int H, const float *g, float *c, float *h)
{
    for (int j = 0; j < H; j += VEC) {
        int m = LANES(j, H);
        vf i = vsigmoid(ld(g + j, m)), f = vsigmoid(ld(g + H + j, m));
        vf u = vtanh(ld(g + 2 * H + j, m)), o = vsigmoid(ld(g + 3 * H + j, m));
        vf cn = f * ld(c + j, m) + i * u;
        st(c + j, cn, m);
        st(h + j, o * vtanh(cn), m);
    }
}

/* One GRU update from the input and hidden products (r, z, n blocks of H each). */
static void gru_gates(int H, const float *gi, const float *gh, const float *hp, float *h)
{
    for (int j = 0; j < H; j += VEC) {
        int m = LANES(j, H);
        vf r = vsigmoid(ld(gi + j, m) + ld(gh + j, m));
        vf z = vsigmoid(ld(gi + H + j, m) + ld(gh + H + j, m));
        vf nn = vtanh(ld(gi + 2 * H + j, m) + r * ld(gh + 2 * H + j, m));
        st(h + j, nn + z * (ld(hp + j, m) - nn), m);
    }
}

static void tanh_into(int H, const float *g, float *h)
{
    for (int j = 0; j < H; j += VEC) {
        int m = LANES(j, H);
        st(h + j, vtanh(ld(g + j, m)), m);
    }
}

/* ----- a layer over one position of B rows ------------------------------------------------------ */

/* Work space of one call for B rows: gate pre-activations, the GRU's hidden product, the padded
 * logits, and two panels widened to float32. */
typedef struct {
    float *gates, *gh, *logits, *wide;
} work_t;

static void work_free(work_t *w) { free(w->gates), free(w->gh), free(w->logits), free(w->wide); }

static int work_alloc(const net_t *n, int B, work_t *w)
{
    size_t G = (size_t)padded(n->gates) * B;
    w->gates = malloc(G * sizeof(float));
    w->gh = malloc(G * sizeof(float));
    w->logits = malloc((size_t)padded(n->vocab) * B * sizeof(float));
    w->wide = malloc((size_t)n->hidden * 2 * PANEL * sizeof(float)); /* two panels, for wblock_rx2 */
    if (w->gates && w->gh && w->logits && w->wide) return OK;
    work_free(w);
    return E_NOMEM;
}

/* Each of `rows` rows of Y (ldy apart) starts as the n floats of `from`. */
static void fill_rows(float *Y, int rows, int ldy, const float *from, int n)
{
    for (int r = 0; r < rows; r++) memcpy(Y + (size_t)r * ldy, from, n * sizeof(float));
}

/* Advance layer l of B rows by one position: gi (B, Gp) holds its input product and bias (and is
 * overwritten); h, c are the layer's state rows (B, H), updated in place. */
static void layer_step(const net_t *n, int l, int B, float *gi, float *h, float *c, work_t *w)
{
    int H = n->hidden, G = n->gates, Gp = padded(G);
    if (n->cell == CELL_GRU) {
        fill_rows(w->gh, B, Gp, n->b_hh[l], Gp);
        product(n, B, G, h, n->w_hh[l], w->gh, Gp, w->wide);
        for (int r = 0; r < B; r++)
            gru_gates(H, gi + (size_t)r * Gp, w->gh + (size_t)r * Gp, h + (size_t)r * H, h + (size_t)r * H);
        return;
    }
    product(n, B, G, h, n->w_hh[l], gi, Gp, w->wide);
    for (int r = 0; r < B; r++) {
        if (n->cell == CELL_LSTM)
            lstm_gates(H, gi + (size_t)r * Gp, c + (size_t)r * H, h + (size_t)r * H);
        else
            tanh_into(H, gi + (size_t)r * Gp, h + (size_t)r * H);
    }
}

/* gi[r] = table[ids[r]] (layer 0) or b_in + x[r] @ W_ih (the layers above), for `rows` rows. */
static void input_product(const net_t *n, int l, int rows, const int64_t *ids, const float *x, float *gi,
                          work_t *w)
{
    int G = n->gates, Gp = padded(G);
    if (l == 0) {
        for (int r = 0; r < rows; r++) {
            memcpy(gi + (size_t)r * Gp, n->table + (size_t)ids[r] * G, G * sizeof(float));
            memset(gi + (size_t)r * Gp + G, 0, (Gp - G) * sizeof(float));
        }
        return;
    }
    fill_rows(gi, rows, Gp, n->b_in[l], Gp);
    product(n, rows, G, x, n->w_ih[l], gi, Gp, w->wide);
}

/* An id is an index into the table: one out of range is refused, never read. */
static int ids_ok(const net_t *n, size_t count, const int64_t *ids)
{
    for (size_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= n->vocab) return 0;
    return 1;
}

/* One position of every layer for B rows; h, c: (layers, B, H) updated in place. */
static void step_layers(const net_t *n, int B, const int64_t *ids, float *h, float *c, work_t *w)
{
    size_t LH = (size_t)B * n->hidden;
    for (int l = 0; l < n->layers; l++) {
        input_product(n, l, B, ids, l ? h + (l - 1) * LH : NULL, w->gates, w);
        layer_step(n, l, B, w->gates, h + l * LH, c ? c + l * LH : NULL, w);
    }
}

/* Logits (B, V) of the top layer's outputs top (B, H), through w->logits (B, padded V). */
static void head(const net_t *n, int B, const float *top, float *logits, work_t *w)
{
    int V = n->vocab, Vp = padded(V);
    fill_rows(w->logits, B, Vp, n->head_b, Vp);
    product(n, B, V, top, n->head_w, w->logits, Vp, w->wide);
    for (int r = 0; r < B; r++) memcpy(logits + (size_t)r * V, w->logits + (size_t)r * Vp, V * sizeof(float));
}

static const float *top_layer(const net_t *n, int B, const float *h)
{
    return h + (size_t)(n->layers - 1) * B * n->hidden;
}

/* ----- entry points: 0 on success, else E_NOMEM or E_ARGS (nothing written) ------------------- */

/* Logits (B, V) of the top layer's outputs (B, H). */
int gb_head(const net_t *n, int B, const float *top, float *logits)
{
    work_t w;
    if (B <= 0) return E_ARGS;
    if (work_alloc(n, B, &w)) return E_NOMEM;
    head(n, B, top, logits, &w);
    work_free(&w);
    return OK;
}

/* One character for B rows: ids (B,); h, c (layers, B, H) updated in place (c NULL but for LSTM);
 * logits (B, V) out. */
int gb_step(const net_t *n, int B, const int64_t *ids, float *h, float *c, float *logits)
{
    work_t w;
    if (B <= 0 || !ids_ok(n, B, ids)) return E_ARGS;
    if (work_alloc(n, B, &w)) return E_NOMEM;
    step_layers(n, B, ids, h, c, &w);
    head(n, B, top_layer(n, B, h), logits, &w);
    work_free(&w);
    return OK;
}

/* Prompt chunks ids (B, T) from the state h, c (layers, B, H), updated in place, one layer at a
 * time: a layer's input products for every position are one product of T*B rows (its weights
 * read once, not T times), then its recurrence runs position by position. A row's arithmetic is
 * the same as T calls of gb_step, so reading and stepping agree exactly. */
int gb_read(const net_t *n, int B, int T, const int64_t *ids, float *h, float *c)
{
    if (B <= 0 || T <= 0 || !ids_ok(n, (size_t)B * T, ids)) return E_ARGS;
    int H = n->hidden, Gp = padded(n->gates);
    size_t LH = (size_t)B * H, rows = (size_t)B * T;
    work_t w;
    if (work_alloc(n, B, &w)) return E_NOMEM;
    float *gi = malloc(rows * Gp * sizeof(float));   /* (T, B, Gp): a layer's input products */
    float *out = malloc(rows * H * sizeof(float));   /* (T, B, H): a layer's outputs */
    float *x = malloc(rows * H * sizeof(float));     /* (T, B, H): its input, the layer below's outputs */
    int64_t *tids = malloc(rows * sizeof(int64_t)); /* (T, B): the ids position-major, like out */
    int rc = gi && out && x && tids ? OK : E_NOMEM;
    for (size_t t = 0; rc == OK && t < (size_t)T; t++)
        for (size_t r = 0; r < (size_t)B; r++) tids[t * B + r] = ids[r * T + t];
    for (int l = 0; rc == OK && l < n->layers; l++) {
        input_product(n, l, (int)rows, tids, x, gi, &w);
        float *hl = h + l * LH, *cl = c ? c + l * LH : NULL;
        for (size_t t = 0; t < (size_t)T; t++) {
            layer_step(n, l, B, gi + t * B * Gp, hl, cl, &w);
            memcpy(out + t * LH, hl, LH * sizeof(float));
        }
        float *swap = x;
        x = out, out = swap;
    }
    free(gi), free(out), free(x), free(tids);
    work_free(&w);
    return rc;
}

/* ----- sampling: one row's next character from its logits and one uniform in [0, 1) ------------ */

typedef struct {
    float value;
    int index;
} ranked_t;

static int by_value_desc(const void *a, const void *b)
{
    const ranked_t *x = a, *y = b;
    if (x->value > y->value) return -1;
    if (x->value < y->value) return 1;
    return x->index - y->index; /* stable: ties keep vocabulary order */
}

/* Index of the first cumulative sum above u * total. */
static int inverse_cdf(int V, const float *p, float u)
{
    float total = 0.0f;
    for (int i = 0; i < V; i++) total += p[i];
    float target = u * total, cdf = 0.0f;
    for (int i = 0; i < V; i++) {
        cdf += p[i];
        if (cdf > target) return i;
    }
    for (int i = V - 1; i > 0; i--) /* rounding left the target at the total: the last kept one */
        if (p[i] > 0.0f) return i;
    return 0;
}

static void softmax(int V, const float *x, float *p)
{
    float m = x[0], s = 0.0f;
    for (int i = 1; i < V; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V; i++) s += (p[i] = expf(x[i] - m));
    for (int i = 0; i < V; i++) p[i] /= s;
}

static int sample_row(int V, const float *logits, float temp, int64_t top_k, float top_p, int greedy, float u,
                      float *scaled, float *p, ranked_t *ranked)
{
    if (greedy) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) scaled[i] = logits[i] / temp;
    if (top_k >= V && !(top_p < 1.0f)) {
        softmax(V, scaled, p);
        return inverse_cdf(V, p, u);
    }
    for (int i = 0; i < V; i++) ranked[i] = (ranked_t){scaled[i], i};
    qsort(ranked, V, sizeof *ranked, by_value_desc);
    for (int i = 0; i < V; i++) scaled[i] = ranked[i].value;
    softmax(V, scaled, p);
    float before = 0.0f;
    for (int i = 0; i < V; i++) {
        float pi = p[i];
        if (i >= top_k || before >= top_p) p[i] = 0.0f; /* the most likely one always stays */
        before += pi;
    }
    return ranked[inverse_cdf(V, p, u)].index;
}

/* S characters for B rows: feed ids (B,), sample, feed the sample, ... Per row: temperature
 * (ignored when greedy), top_k (>= V: off), top_p (>= 1: off), greedy, and S uniforms (B, S).
 * out (B, S): the sampled ids; h, c updated in place to the state after feeding S inputs. */
int gb_decode(const net_t *n, int B, int S, const int64_t *ids, float *h, float *c, const float *temps,
              const int64_t *top_k, const float *top_p, const uint8_t *greedy, const float *uniforms, int64_t *out)
{
    if (B <= 0 || S <= 0 || !ids_ok(n, B, ids)) return E_ARGS;
    int V = n->vocab;
    work_t w;
    if (work_alloc(n, B, &w)) return E_NOMEM;
    float *logits = malloc((size_t)B * V * sizeof(float));
    float *scratch = malloc(2 * (size_t)V * sizeof(float));
    ranked_t *ranked = malloc((size_t)V * sizeof(ranked_t));
    int64_t *cur = malloc((size_t)B * sizeof(int64_t));
    int rc = (logits && scratch && ranked && cur) ? OK : E_NOMEM;
    if (rc == OK) memcpy(cur, ids, (size_t)B * sizeof(int64_t));
    for (int s = 0; rc == OK && s < S; s++) {
        step_layers(n, B, cur, h, c, &w);
        head(n, B, top_layer(n, B, h), logits, &w);
        for (int r = 0; r < B; r++) {
            cur[r] = sample_row(V, logits + (size_t)r * V, temps[r], top_k[r], top_p[r], greedy[r],
                                uniforms[(size_t)r * S + s], scratch, scratch + V, ranked);
            out[(size_t)r * S + s] = cur[r];
        }
    }
    free(logits), free(scratch), free(ranked), free(cur);
    work_free(&w);
    return rc;
}

/* ----- calibration: which products run faster wide on this CPU ---------------------------------- */

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Time a batch (48 rows) and a lone row of a 384 x 1536 product (a 2x384 LSTM layer's), narrow
 * and wide, interleaved, best of several; keep whichever is faster for each and return the mode
 * set. seconds (4): narrow and wide batch, narrow and wide lone row (float32 weights, plus float16
 * where the kernels have them). Where there is nothing wide, all products stay narrow. */
int gb_calibrate(double *seconds)
{
    enum { K = 384, N = 1536, ROWS = 48, REPEATS = 7 };
    for (int i = 0; i < 4; i++) seconds[i] = 0.0;
    if (!HAVE_WIDE) return gb_set_wide(0);
    float *W = malloc((size_t)K * N * sizeof(float)), *X = malloc((size_t)ROWS * K * sizeof(float));
    float *Y = malloc((size_t)ROWS * N * sizeof(float)), *wide = malloc((size_t)K * 2 * PANEL * sizeof(float));
    uint16_t *H16 = malloc((size_t)K * N * sizeof(uint16_t));
    if (!W || !X || !Y || !wide || !H16) {
        free(W), free(X), free(Y), free(wide), free(H16);
        return gb_set_wide(0);
    }
    for (size_t i = 0; i < (size_t)K * N; i++) W[i] = (float)(i % 17) * 1e-3f, H16[i] = (uint16_t)(0x1000 + i % 1024);
    for (size_t i = 0; i < (size_t)ROWS * K; i++) X[i] = (float)(i % 13) * 1e-2f;
    for (int i = 0; i < 4; i++) seconds[i] = 1e30;
    for (int rep = 0; rep < REPEATS; rep++)
        for (int w = 0; w < 2; w++) {
            gb_set_wide(w ? WIDE_BLOCKS : 0);
            double t = seconds_now();
            product_f32(ROWS, K, N, X, K, W, Y, N, wide);
            t = seconds_now() - t;
            seconds[w] = t < seconds[w] ? t : seconds[w];
            gb_set_wide(w ? WIDE_LONE : 0);
            t = seconds_now();
            product_f32(1, K, N, X, K, W, Y, N, wide);
#if HAVE_F16
            product_f16(1, K, N, X, K, H16, Y, N, wide);
#endif
            t = seconds_now() - t;
            seconds[2 + w] = t < seconds[2 + w] ? t : seconds[2 + w];
        }
    free(W), free(X), free(Y), free(wide), free(H16);
    return gb_set_wide((seconds[1] < seconds[0] ? WIDE_BLOCKS : 0) | (seconds[3] < seconds[2] ? WIDE_LONE : 0));
}
