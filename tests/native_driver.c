/* Runs genbot's native char-RNN kernels (charrnn.c, included whole) on inputs from a file, in a
 * program of its own, so that tests can run a build for another CPU (under an emulator) or with
 * other compiler flags than the library genbot loads, and compare what it computes.
 *
 * Products run on 512-bit vectors wherever the build has them (genbot itself times both widths).
 *
 * Usage: native_driver IN OUT. Exit 0 with OUT written; 3 when the build has no float16 weights
 * and IN asks for them; 1 on any other failure (said on stderr).
 *
 * IN: "GBNC", nine int32 (cell, layers, hidden, vocab, gates, wtype, B, T, S), then buffers, each
 * an int64 byte count and the bytes, in this order: table; w_ih, w_hh, b_in, b_hh of each layer
 * (layer by layer; empty where the net_t pointer is NULL); head_w; head_b; ids (B, T) int64;
 * h, c (layers, B, H) float32 (c empty but for LSTM); temps, top_k, top_p, greedy per row;
 * uniforms (B, S).
 * OUT, as buffers: the logits of the top layer after reading ids[:, :T-1] (B, V); the logits of
 * stepping ids[:, T-1] (B, V); h and c after that step; the ids decoded from there (B, S); h and c
 * after decoding.
 */
#include <stdio.h>

#include "charrnn.c"

typedef struct {
    void *data;
    int64_t size;
} buf_t;

static int read_buf(FILE *f, buf_t *b)
{
    if (fread(&b->size, sizeof b->size, 1, f) != 1 || b->size < 0) return 0;
    b->data = malloc(b->size ? (size_t)b->size : 1);
    return b->data && fread(b->data, 1, (size_t)b->size, f) == (size_t)b->size;
}

static void write_buf(FILE *f, const void *data, size_t size)
{
    int64_t n = (int64_t)size;
    fwrite(&n, sizeof n, 1, f);
    fwrite(data, 1, size, f);
}

static const void *or_null(const buf_t *b) { return b->size ? b->data : NULL; }

static int fail(const char *why)
{
    fprintf(stderr, "native_driver: %s\n", why);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) return fail("usage: native_driver IN OUT");
    FILE *in = fopen(argv[1], "rb");
    char magic[4];
    int32_t hdr[9];
    if (!in || fread(magic, 1, 4, in) != 4 || memcmp(magic, "GBNC", 4) || fread(hdr, 4, 9, in) != 9)
        return fail("bad input header");
    int layers = hdr[1], H = hdr[2], V = hdr[3], B = hdr[6], T = hdr[7], S = hdr[8];
    if (hdr[5] == W_F16 && !HAVE_F16) return 3;
    gb_set_wide(WIDE_BLOCKS | WIDE_LONE); /* every product on 512-bit vectors where the build has them */
    if (layers <= 0 || layers > 64 || T < 2) return fail("bad header values");

    enum { PER_LAYER = 4, TAIL = 10 };
    int count = 1 + PER_LAYER * layers + TAIL;
    buf_t *b = calloc((size_t)count, sizeof *b);
    const void **ptrs = calloc((size_t)PER_LAYER * layers, sizeof *ptrs);
    if (!b || !ptrs) return fail("out of memory");
    for (int i = 0; i < count; i++)
        if (!read_buf(in, &b[i])) return fail("truncated input");
    fclose(in);
    for (int l = 0; l < layers; l++)
        for (int k = 0; k < PER_LAYER; k++) ptrs[k * layers + l] = or_null(&b[1 + l * PER_LAYER + k]);
    const buf_t *tail = b + 1 + PER_LAYER * layers;
    net_t net = {hdr[0], layers, H, V, hdr[4], hdr[5], b[0].data, ptrs, ptrs + layers,
                 (const float *const *)(ptrs + 2 * layers), (const float *const *)(ptrs + 3 * layers),
                 tail[0].data, tail[1].data};
    const int64_t *ids = tail[2].data;
    float *h = tail[3].data, *c = (float *)or_null(&tail[4]);
    size_t state = (size_t)layers * B * H * sizeof(float);

    int64_t *prompt = malloc((size_t)B * (T - 1) * sizeof(int64_t)), *last = malloc((size_t)B * sizeof(int64_t));
    float *read_logits = malloc((size_t)B * V * sizeof(float)), *step_logits = malloc((size_t)B * V * sizeof(float));
    int64_t *decoded = malloc((size_t)B * S * sizeof(int64_t));
    if (!prompt || !last || !read_logits || !step_logits || !decoded) return fail("out of memory");
    for (int r = 0; r < B; r++) {
        memcpy(prompt + (size_t)r * (T - 1), ids + (size_t)r * T, (size_t)(T - 1) * sizeof(int64_t));
        last[r] = ids[(size_t)r * T + T - 1];
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) return fail("cannot write the output");
    if (gb_read(&net, B, T - 1, prompt, h, c) || gb_head(&net, B, h + (size_t)(layers - 1) * B * H, read_logits) ||
        gb_step(&net, B, last, h, c, step_logits))
        return fail("reading or stepping failed");
    write_buf(out, read_logits, (size_t)B * V * sizeof(float));
    write_buf(out, step_logits, (size_t)B * V * sizeof(float));
    write_buf(out, h, state);
    write_buf(out, c, c ? state : 0);
    if (gb_decode(&net, B, S, last, h, c, tail[5].data, tail[6].data, tail[7].data, tail[8].data, tail[9].data,
                  decoded))
        return fail("decoding failed");
    write_buf(out, decoded, (size_t)B * S * sizeof(int64_t));
    write_buf(out, h, state);
    write_buf(out, c, c ? state : 0);
    return fclose(out) ? fail("cannot write the output") : 0;
}
