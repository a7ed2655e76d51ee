/* `shardlora plot OUT`: OUT/metrics.jsonl to OUT/loss.svg, a self-contained SVG 1.1 line
 * chart of the training and evaluation loss against the step (no script, no external files). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <utf8proc.h>

#include "../../io/afile.h"
#include "../args.h"
#include "../cmds.h"

/* Canvas and plot area, in SVG user units (px). */
enum {
    PLOT_W = 800,
    PLOT_H = 480,
    PLOT_LEFT = 78,
    PLOT_RIGHT = 24,
    PLOT_TOP = 44,
    PLOT_BOTTOM = 56
};
#define PLOT_X0 ((double)PLOT_LEFT)
#define PLOT_X1 ((double)(PLOT_W - PLOT_RIGHT))
#define PLOT_Y0 ((double)PLOT_TOP)
#define PLOT_Y1 ((double)(PLOT_H - PLOT_BOTTOM))

/* TensorBoard's default smoothing weight, which it applies to the (at most) 1000 samples it
 * keeps of a scalar series; the smoothed curve is drawn from PLOT_SMOOTH_MIN_POINTS train
 * points on (below that the raw line is readable by itself). */
#define PLOT_SMOOTH_WEIGHT 0.6
#define PLOT_SMOOTH_SAMPLES 1000
#define PLOT_SMOOTH_MIN_POINTS 30
/* Larger magnitudes count as non-finite: writers use them for inf, and the axis arithmetic
 * (max - min) has to stay finite. */
#define PLOT_MAX_ABS 1e300
/* Steps are whole numbers read as doubles: up to 2^53 they are exact. */
#define PLOT_MAX_STEP 9007199254740992.0

#define PLOT_TRAIN_COLOUR "#1f77b4"
#define PLOT_EVAL_COLOUR "#d62728"

/* One loss value from metrics.jsonl. seq is the line number: after sorting by (step, seq)
 * the last line written for a step wins (a resumed run repeats steps). */
typedef struct {
    int64_t step;
    long seq;
    double v; /* NAN if the line held a non-finite value */
} PlotPoint;

typedef struct {
    PlotPoint *p;
    size_t n, cap;
} PlotSeries;

/* The SVG text being built. */
typedef struct {
    char *s;
    size_t n, cap;
} PlotBuf;

/* An axis over [lo, hi] with a tick every `step`. */
typedef struct {
    double lo, hi, step;
} PlotAxis;

static void plot_series_push(PlotSeries *s, int64_t step, long seq, double v) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->p = realloc(s->p, s->cap * sizeof *s->p);
        SL_CHECK(s->p != NULL, "out of memory");
    }
    s->p[s->n++] = (PlotPoint){step, seq, v};
}

static int plot_point_cmp(const void *a, const void *b) {
    const PlotPoint *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Sorts by step, keeps the last line of each step, then drops the non-finite values. */
static void plot_series_finish(PlotSeries *s) {
    if (s->n) qsort(s->p, s->n, sizeof *s->p, plot_point_cmp);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (i + 1 < s->n && s->p[i + 1].step == s->p[i].step) continue;
        if (isfinite(s->p[i].v)) s->p[k++] = s->p[i];
    }
    s->n = k;
}

static void plot_vprintf(PlotBuf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    SL_CHECK(len >= 0, "bad format");
    if (b->n + (size_t)len + 1 > b->cap) {
        while (b->n + (size_t)len + 1 > b->cap)
            b->cap = b->cap ? 2 * b->cap : 1 << 16;
        b->s = realloc(b->s, b->cap);
        SL_CHECK(b->s != NULL, "out of memory");
    }
    vsnprintf(b->s + b->n, (size_t)len + 1, fmt, ap);
    b->n += (size_t)len;
}

static void plot_printf(PlotBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plot_printf(PlotBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    plot_vprintf(b, fmt, ap);
    va_end(ap);
}

/* s as XML character data: the markup characters as entities, and what XML 1.0 forbids
 * (control characters, U+FFFE/U+FFFF, invalid UTF-8) as U+FFFD, so that any title (from
 * argv or a directory name) still makes a well-formed file. */
static void plot_put_xml(PlotBuf *b, const char *s) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t left = strlen(s);
    while (left) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)left, &c);
        if (k <= 0) k = 1, c = 0xFFFD;
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0xFFFE || c == 0xFFFF)
            c = 0xFFFD;
        if (c == '&')
            plot_printf(b, "&amp;");
        else if (c == '<')
            plot_printf(b, "&lt;");
        else if (c == '>')
            plot_printf(b, "&gt;");
        else if (c == '"')
            plot_printf(b, "&quot;");
        else if (c == '\'')
            plot_printf(b, "&apos;");
        else if (c == 0xFFFD)
            plot_printf(b, "&#xFFFD;");
        else
            plot_printf(b, "%.*s", (int)k, (const char *)p);
        p += k;
        left -= (size_t)k;
    }
}

/* A bare JSON token that stands for a non-finite number: NaN, Infinity (Python's json),
 * nan, inf (C's printf), with a sign, or a number too large for a double (1e999). */
static int plot_token_nonfinite(const char *t, size_t n) {
    char buf[64];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, t, n);
    buf[n] = 0;
    const char *w = buf[0] == '-' ? buf + 1 : buf;
    if (!strcasecmp(w, "nan") || !strcasecmp(w, "inf") || !strcasecmp(w, "infinity")) return 1;
    if (!(w[0] >= '0' && w[0] <= '9')) return 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    return *end == 0 && errno == ERANGE && isinf(v);
}

/* Copies line[0..n) to out (room for 2n + 1 bytes) with every non-finite token outside
 * strings replaced by null, which jansson reads and which plot_value() skips: jansson
 * rejects those tokens, but Python's json writes them, and so did `shardlora train` before
 * it wrote null for a non-finite loss (old metrics.jsonl files). Anything else malformed
 * is left for jansson to report. Returns the new length. */
static size_t plot_json_tolerate(const char *line, size_t n, char *out) {
    static const char delim[] = " \t\r\n,:[]{}\"";
    size_t o = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = line[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < n)
                out[o++] = line[++i];
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"' || c == 0 || strchr(delim, c)) {
            in_str = c == '"';
            out[o++] = c;
            continue;
        }
        size_t j = i;
        while (j < n && line[j] != 0 && !strchr(delim, line[j]))
            j++;
        if (plot_token_nonfinite(line + i, j - i)) {
            memcpy(out + o, "null", 4);
            o += 4;
        } else {
            memcpy(out + o, line + i, j - i);
            o += j - i;
        }
        i = j - 1;
    }
    out[o] = 0;
    return o;
}

/* The loss under `key`: a number, or NAN for a non-finite one (null, a string such as
 * "NaN" or "inf", or a magnitude over PLOT_MAX_ABS). 0 with st set if it is something else. */
static int plot_value(json_t *x, const char *key, const char *where, double *v, ErrStatus *st) {
    if (json_is_number(x)) {
        *v = json_number_value(x);
        if (!isfinite(*v) || fabs(*v) > PLOT_MAX_ABS) *v = NAN;
        return 1;
    }
    if (json_is_null(x)) {
        *v = NAN;
        return 1;
    }
    if (json_is_string(x)) {
        const char *s = json_string_value(x);
        char *end;
        double d = strtod(s, &end);
        while (*end == ' ')
            end++;
        if (end != s && *end == 0 && !isfinite(d)) {
            *v = NAN;
            return 1;
        }
        return err_status_set(st, "%s: \"%s\" is the string \"%.40s\", not a number", where, key,
                              s);
    }
    return err_status_set(st, "%s: \"%s\" is not a number", where, key);
}

/* One line of metrics.jsonl into train/eval; lines with neither "loss" nor "eval_loss"
 * are ignored. 0 with st = "PATH:LINE: reason" if the line is malformed. */
static int plot_parse_line(const char *line, size_t len, const char *where, long seq,
                           PlotSeries *train, PlotSeries *eval, ErrStatus *st) {
    char *fixed = malloc(2 * len + 1);
    SL_CHECK(fixed != NULL, "out of memory");
    size_t flen = plot_json_tolerate(line, len, fixed);
    json_error_t je;
    json_t *o = json_loadb(fixed, flen, JSON_DECODE_INT_AS_REAL, &je);
    free(fixed);
    if (!o) return err_status_set(st, "%s: invalid JSON: %s", where, je.text);
    /* json_object_get of a non-object is NULL */
    json_t *loss = json_object_get(o, "loss"), *eloss = json_object_get(o, "eval_loss");
    json_t *js = json_object_get(o, "step");
    double step = json_is_number(js) ? json_number_value(js) : -1, v;
    int ok = 1;
    if (!json_is_object(o))
        ok = err_status_set(st, "%s: expected a JSON object", where);
    else if ((loss || eloss) && !(step >= 0 && step <= PLOT_MAX_STEP && step == floor(step)))
        ok = err_status_set(st, "%s: \"step\" is missing or not a whole number >= 0", where);
    if (ok && loss && (ok = plot_value(loss, "loss", where, &v, st)))
        plot_series_push(train, (int64_t)step, seq, v);
    if (ok && eloss && (ok = plot_value(eloss, "eval_loss", where, &v, st)))
        plot_series_push(eval, (int64_t)step, seq, v);
    json_decref(o);
    return ok;
}

/* Reads path into train and eval, in file order (plot_series_finish sorts them).
 * *lines counts the lines that are not blank. */
static int plot_read_metrics(const char *path, PlotSeries *train, PlotSeries *eval, long *lines,
                             ErrStatus *st) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_status_set(st, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int ok = 1;
    *lines = 0;
    while (ok && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t blank = strspn(line, " \t\r\n");
        if (blank == (size_t)len) continue;
        (*lines)++;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        ok = plot_parse_line(line, (size_t)len, where, lineno, train, eval, st);
    }
    if (ok && ferror(f)) ok = err_status_set(st, "cannot read %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return ok;
}

/* The smoothing weight per point for n points: TensorBoard's 0.6 up to 1000 points; past
 * that, TensorBoard smooths 1000 evenly spread samples, so 0.6 per n/1000 points, which
 * makes the curve as smooth across the chart as TensorBoard's (0.6 per point over 20000
 * points would hardly smooth at all). */
static double plot_smooth_weight(size_t n) {
    if (n <= PLOT_SMOOTH_SAMPLES) return PLOT_SMOOTH_WEIGHT;
    return pow(PLOT_SMOOTH_WEIGHT, (double)PLOT_SMOOTH_SAMPLES / (double)n);
}

/* The exponential moving average TensorBoard draws: s_t = w s_{t-1} + (1 - w) x_t from
 * s_0 = 0, divided by 1 - w^t to remove the pull towards that zero start (the bias
 * correction of Adam, Kingma & Ba 2015). out[i] smooths x[0..i]. */
static void plot_smooth_ema(double *out, const PlotPoint *x, size_t n, double w) {
    double s = 0, wt = 1;
    for (size_t i = 0; i < n; i++) {
        s = w * s + (1 - w) * x[i].v;
        wt *= w;
        out[i] = s / (1 - wt);
    }
}

/* A tick step of 1, 2 or 5 x 10^k giving about `target` intervals over [min, max], and
 * bounds on multiples of it ("Nice numbers for graph labels", Heckbert, Graphics Gems 1990). */
static PlotAxis plot_axis_nice(double min, double max, int target, double min_step) {
    if (!(max - min > 1e-9 * fmax(fabs(min), fabs(max)))) {
        double pad = min != 0 ? 0.1 * fabs(min) : 1;
        min -= pad;
        max += pad;
    }
    double raw = (max - min) / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    PlotAxis a;
    a.step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    if (a.step < min_step) a.step = min_step;
    a.lo = floor(min / a.step) * a.step;
    a.hi = ceil(max / a.step) * a.step;
    return a;
}

/* A tick label with as many decimals as the step needs. */
static void plot_fmt_tick(char *buf, size_t n, double v, double step) {
    if (fabs(v) < 1e-6 * step) v = 0; /* not "-0" or "1e-17" */
    int dec = (int)-floor(log10(step) + 1e-9);
    if (dec < 0) dec = 0;
    if (fabs(v) >= 1e9 || dec > 9)
        snprintf(buf, n, "%g", v);
    else
        snprintf(buf, n, "%.*f", dec, v);
}

static double plot_px(const PlotAxis *ax, double x) {
    return PLOT_X0 + (x - ax->lo) / (ax->hi - ax->lo) * (PLOT_X1 - PLOT_X0);
}

static double plot_py(const PlotAxis *ay, double y) {
    return PLOT_Y1 - (y - ay->lo) / (ay->hi - ay->lo) * (PLOT_Y1 - PLOT_Y0);
}

/* One axis: a grid line, a tick mark and a label at every tick ("x-grid", "x-ticks"). lo
 * and hi are multiples of the step, so the ticks are (hi - lo) / step + 1. */
static void plot_put_axis(PlotBuf *b, const PlotAxis *a, int is_x) {
    int n = (int)llround((a->hi - a->lo) / a->step) + 1;
    const char *name = is_x ? "x" : "y";
    char lab[64];
    plot_printf(b, "<g id=\"%s-grid\" stroke=\"#e0e0e0\">\n", name);
    for (int i = 0; i < n; i++) {
        double p = is_x ? plot_px(a, a->lo + i * a->step) : plot_py(a, a->lo + i * a->step);
        plot_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n",
                    is_x ? p : PLOT_X0, is_x ? PLOT_Y0 : p, is_x ? p : PLOT_X1, is_x ? PLOT_Y1 : p);
    }
    plot_printf(b, "</g>\n<g id=\"%s-ticks\" text-anchor=\"%s\">\n", name, is_x ? "middle" : "end");
    for (int i = 0; i < n; i++) {
        double v = a->lo + i * a->step, p = is_x ? plot_px(a, v) : plot_py(a, v);
        /* a 5 px tick mark outside the frame, the label beyond it */
        double x1 = is_x ? p : PLOT_X0 - 5, y1 = is_x ? PLOT_Y1 : p;
        double x2 = is_x ? p : PLOT_X0, y2 = is_x ? PLOT_Y1 + 5 : p;
        double tx = is_x ? p : PLOT_X0 - 8, ty = is_x ? PLOT_Y1 + 19 : p + 4;
        plot_fmt_tick(lab, sizeof lab, v, a->step);
        plot_printf(b,
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000000\"/>"
                    "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n",
                    x1, y1, x2, y2, tx, ty, lab);
    }
    plot_printf(b, "</g>\n");
}

/* Both axes, their titles and the frame of the plot area. */
static void plot_put_axes(PlotBuf *b, const PlotAxis *ax, const PlotAxis *ay) {
    plot_put_axis(b, ax, 1);
    plot_put_axis(b, ay, 0);
    plot_printf(b,
                "<rect id=\"frame\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                "fill=\"none\" stroke=\"#000000\"/>\n",
                PLOT_X0, PLOT_Y0, PLOT_X1 - PLOT_X0, PLOT_Y1 - PLOT_Y0);
    plot_printf(b,
                "<text id=\"x-title\" x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" "
                "font-size=\"13\">step</text>\n",
                (PLOT_X0 + PLOT_X1) / 2, PLOT_H - 14);
    double ym = (PLOT_Y0 + PLOT_Y1) / 2;
    plot_printf(b,
                "<text id=\"y-title\" x=\"18\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\" "
                "transform=\"rotate(-90 18 %.2f)\">loss</text>\n",
                ym, ym);
}

/* A polyline through the points (y from ys if given, else the points' values). */
static void plot_put_line(PlotBuf *b, const char *id, const char *colour, double width,
                          double opacity, const PlotPoint *p, const double *ys, size_t n,
                          const PlotAxis *ax, const PlotAxis *ay) {
    plot_printf(b,
                "<polyline id=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
                "stroke-opacity=\"%.2f\" stroke-linejoin=\"round\" points=\"",
                id, colour, width, opacity);
    for (size_t i = 0; i < n; i++)
        plot_printf(b, "%s%.2f,%.2f", i ? " " : "", plot_px(ax, (double)p[i].step),
                    plot_py(ay, ys ? ys[i] : p[i].v));
    plot_printf(b, "\"/>\n");
}

/* A marker per point, with its value as a tooltip. */
static void plot_put_markers(PlotBuf *b, const char *id, const char *colour, const char *what,
                             const PlotPoint *p, size_t n, const PlotAxis *ax, const PlotAxis *ay) {
    plot_printf(b, "<g id=\"%s\" fill=\"%s\">\n", id, colour);
    for (size_t i = 0; i < n; i++)
        plot_printf(
            b,
            "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\"><title>step %lld: %s %.6g</title></circle>\n",
            plot_px(ax, (double)p[i].step), plot_py(ay, p[i].v), (long long)p[i].step, what,
            p[i].v);
    plot_printf(b, "</g>\n");
}

/* How many of the points fall in the box [x0, x1] x [y0, y1] (pixels). */
static size_t plot_count_in(const PlotPoint *p, size_t n, const PlotAxis *ax, const PlotAxis *ay,
                            double x0, double y0, double x1, double y1) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        double x = plot_px(ax, (double)p[i].step), y = plot_py(ay, p[i].v);
        c += x >= x0 && x <= x1 && y >= y0 && y <= y1;
    }
    return c;
}

typedef struct {
    const char *text, *colour;
    double opacity;
    int marker;
} PlotLegendEntry;

/* The legend box in the corner of the plot area that hides the fewest points. */
static void plot_put_legend(PlotBuf *b, const PlotLegendEntry *e, int ne, const PlotSeries *train,
                            const PlotSeries *eval, const PlotAxis *ax, const PlotAxis *ay) {
    size_t longest = 0;
    for (int i = 0; i < ne; i++)
        longest = strlen(e[i].text) > longest ? strlen(e[i].text) : longest;
    double w = 44 + 6.6 * (double)longest, h = 10 + 18.0 * ne, pad = 10;
    double cx[4] = {PLOT_X1 - pad - w, PLOT_X1 - pad - w, PLOT_X0 + pad, PLOT_X0 + pad};
    double cy[4] = {PLOT_Y0 + pad, PLOT_Y1 - pad - h, PLOT_Y1 - pad - h, PLOT_Y0 + pad};
    int best = 0;
    size_t best_n = SIZE_MAX;
    for (int k = 0; k < 4; k++) {
        size_t c = plot_count_in(train->p, train->n, ax, ay, cx[k], cy[k], cx[k] + w, cy[k] + h) +
                   plot_count_in(eval->p, eval->n, ax, ay, cx[k], cy[k], cx[k] + w, cy[k] + h);
        if (c < best_n) best = k, best_n = c;
    }
    double x = cx[best], y = cy[best];
    plot_printf(b,
                "<g id=\"legend\">\n<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                "fill=\"#ffffff\" fill-opacity=\"0.85\" stroke=\"#999999\"/>\n",
                x, y, w, h);
    for (int i = 0; i < ne; i++) {
        double ly = y + 14 + 18.0 * i;
        plot_printf(b,
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
                    "stroke-width=\"2\" stroke-opacity=\"%.2f\"/>",
                    x + 8, ly, x + 32, ly, e[i].colour, e[i].opacity);
        if (e[i].marker)
            plot_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>", x + 20, ly,
                        e[i].colour);
        plot_printf(b, "<text x=\"%.2f\" y=\"%.2f\">", x + 38, ly + 4);
        plot_put_xml(b, e[i].text);
        plot_printf(b, "</text>\n");
    }
    plot_printf(b, "</g>\n");
}

/* The whole SVG document into b. train has at least one point. */
static void plot_render(PlotBuf *b, const char *title, const PlotSeries *train,
                        const PlotSeries *eval) {
    double xmin = (double)train->p[0].step, xmax = (double)train->p[train->n - 1].step;
    double ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < train->n; i++)
        ymin = fmin(ymin, train->p[i].v), ymax = fmax(ymax, train->p[i].v);
    for (size_t i = 0; i < eval->n; i++)
        ymin = fmin(ymin, eval->p[i].v), ymax = fmax(ymax, eval->p[i].v);
    if (eval->n) {
        xmin = fmin(xmin, (double)eval->p[0].step);
        xmax = fmax(xmax, (double)eval->p[eval->n - 1].step);
    }
    if (xmax == xmin) xmin = xmin >= 1 ? xmin - 1 : 0, xmax += 1;
    PlotAxis ax = plot_axis_nice(xmin, xmax, 8, 1), ay = plot_axis_nice(ymin, ymax, 6, 0);

    plot_printf(
        b,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
        "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
        PLOT_W, PLOT_H, PLOT_W, PLOT_H);
    plot_printf(b, "<title>");
    plot_put_xml(b, title);
    plot_printf(b, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", PLOT_W,
                PLOT_H);
    plot_printf(b,
                "<text id=\"title\" x=\"%.2f\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" "
                "font-weight=\"bold\">",
                (PLOT_X0 + PLOT_X1) / 2);
    plot_put_xml(b, title);
    plot_printf(b, "</text>\n");
    plot_put_axes(b, &ax, &ay);

    /* Markers on the train line only while it is not smoothed: the raw points are then
     * few enough to tell apart, and a faint line with solid markers would not be faint. */
    int smooth = train->n >= PLOT_SMOOTH_MIN_POINTS, markers = !smooth;
    PlotLegendEntry legend[3];
    char smooth_text[128];
    int nl = 0;
    plot_put_line(b, "train-raw", PLOT_TRAIN_COLOUR, 1.5, smooth ? 0.3 : 1, train->p, NULL,
                  train->n, &ax, &ay);
    legend[nl++] = (PlotLegendEntry){smooth ? "train loss (raw)" : "train loss", PLOT_TRAIN_COLOUR,
                                     smooth ? 0.3 : 1, markers};
    if (markers)
        plot_put_markers(b, "train-points", PLOT_TRAIN_COLOUR, "train loss", train->p, train->n,
                         &ax, &ay);
    if (smooth) {
        double *ys = malloc(train->n * sizeof *ys);
        SL_CHECK(ys != NULL, "out of memory");
        double w = plot_smooth_weight(train->n);
        plot_smooth_ema(ys, train->p, train->n, w);
        plot_put_line(b, "train-smooth", PLOT_TRAIN_COLOUR, 2, 1, train->p, ys, train->n, &ax, &ay);
        free(ys);
        if (w == PLOT_SMOOTH_WEIGHT)
            snprintf(smooth_text, sizeof smooth_text,
                     "train loss, smoothed (EMA %g, as TensorBoard)", w);
        else
            snprintf(smooth_text, sizeof smooth_text,
                     "train loss, smoothed (EMA %.4g, as TensorBoard's %g on %d samples)", w,
                     PLOT_SMOOTH_WEIGHT, PLOT_SMOOTH_SAMPLES);
        legend[nl++] = (PlotLegendEntry){smooth_text, PLOT_TRAIN_COLOUR, 1, 0};
    }
    if (eval->n) {
        plot_put_line(b, "eval", PLOT_EVAL_COLOUR, 1.5, 1, eval->p, NULL, eval->n, &ax, &ay);
        plot_put_markers(b, "eval-points", PLOT_EVAL_COLOUR, "eval loss", eval->p, eval->n, &ax,
                         &ay);
        legend[nl++] = (PlotLegendEntry){"eval loss", PLOT_EVAL_COLOUR, 1, 1};
    }
    plot_put_legend(b, legend, nl, train, eval, &ax, &ay);
    plot_printf(b, "</svg>\n");
}

/* The default title: the name of the OUT directory (resolved if it is "." or ".."). */
static void plot_default_title(char *buf, size_t n, const char *dir) {
    const char *slash = strrchr(dir, '/');
    const char *name = slash ? slash + 1 : dir;
    char real[PATH_MAX];
    if ((!*name || !strcmp(name, ".") || !strcmp(name, "..")) && realpath(dir, real)) {
        slash = strrchr(real, '/');
        snprintf(buf, n, "%s", slash && slash[1] ? slash + 1 : real);
        return;
    }
    snprintf(buf, n, "%s", *name ? name : dir);
}

int cmd_plot(int argc, char **argv) {
    const char *out_file = NULL, *title = NULL;
    /* Designated initializers: the fields args_parse fills in start at zero. */
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {.name = "out",
         .type = ARG_STR,
         .dst = &out_file,
         .metavar = "FILE",
         .help = "where to write the SVG (default: OUT/loss.svg)"},
        {.name = "title",
         .type = ARG_STR,
         .dst = &title,
         .metavar = "TEXT",
         .help = "the chart's title (default: the name of the OUT directory)"},
    };
    // clang-format on
    int ns = (int)(sizeof specs / sizeof specs[0]);
    const char *usage = "shardlora plot OUT [--out FILE] [--title TEXT]";
    const char *about =
        "Read OUT/metrics.jsonl (written by `shardlora train --out OUT`) and write a\n"
        "self-contained SVG chart, to open in a browser, of the training and evaluation loss\n"
        "against the step. From 30 train points on, the raw train loss is drawn faint under a\n"
        "smoothed one: a debiased exponential moving average with TensorBoard's default weight\n"
        "0.6 (past 1000 points, 0.6 per 1/1000 of the points, as TensorBoard smooths the 1000\n"
        "samples it keeps). Where a step appears more than once (a resumed run) its last line\n"
        "wins; NaN and infinite values (numbers, strings such as \"NaN\", bare NaN/Infinity,\n"
        "magnitudes over 1e300) are left out.\n"
        "Exit status: 2 bad command line, 3 missing or malformed metrics file or no finite\n"
        "training loss in it, 4 the SVG cannot be written.";
    ErrStatus st;
    const char *dir = argc >= 3 && strncmp(argv[2], "-", 1) != 0 ? argv[2] : NULL;
    int rc;
    if (!args_command(specs, ns, argc, argv, dir ? 3 : 2, "plot", usage, about, &rc)) return rc;
    if (!dir) {
        fprintf(stderr, "shardlora plot: the OUT directory is required (the first argument)\n");
        args_print_help(stderr, usage, about, specs, ns);
        return EXIT_USAGE;
    }
    /* OUT without trailing slashes, so that messages read OUT/metrics.jsonl */
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    char *out = malloc(dlen + 1), *mpath = malloc(dlen + 32), *svg = malloc(dlen + 32);
    SL_CHECK(out && mpath && svg, "out of memory");
    memcpy(out, dir, dlen);
    out[dlen] = 0;
    const char *sep = strcmp(out, "/") ? "/" : "";
    snprintf(mpath, dlen + 32, "%s%smetrics.jsonl", out, sep);
    snprintf(svg, dlen + 32, "%s%sloss.svg", out, sep);
    if (out_file) {
        free(svg);
        svg = strdup(out_file);
        SL_CHECK(svg != NULL, "out of memory");
    }

    PlotSeries train = {0}, eval = {0};
    long lines = 0;
    int read_ok = plot_read_metrics(mpath, &train, &eval, &lines, &st);
    size_t train_lines = train.n;
    plot_series_finish(&train);
    plot_series_finish(&eval);
    if (!read_ok) {
        fprintf(stderr, "shardlora plot: %s\n", st.msg);
        rc = EXIT_BAD_INPUT;
    } else if (train.n == 0) {
        fprintf(stderr, "shardlora plot: %s: %s: nothing to plot\n", mpath,
                lines == 0         ? "no JSON lines (the file is empty)"
                : train_lines == 0 ? "no training lines (objects with a \"loss\")"
                                   : "every training loss is NaN or infinite");
        rc = EXIT_BAD_INPUT;
    } else {
        char deftitle[PATH_MAX];
        if (!title) plot_default_title(deftitle, sizeof deftitle, out);
        PlotBuf b = {0};
        plot_render(&b, title ? title : deftitle, &train, &eval);
        if (!afile_write_all(svg, b.s, b.n, &st)) {
            fprintf(stderr, "shardlora plot: %s\n", st.msg);
            rc = EXIT_IO;
        } else {
            fprintf(stderr, "wrote %s (%zu train points, %zu eval points)\n", svg, train.n, eval.n);
        }
        free(b.s);
    }
    free(train.p);
    free(eval.p);
    free(out);
    free(mpath);
    free(svg);
    return rc;
}
