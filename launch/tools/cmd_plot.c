/* `shardlora plot OUT [OUT ...]`: OUT/metrics.jsonl to OUT/loss.svg, a self-contained SVG 1.1
 * line chart of the training and evaluation loss against the step (no script, no external
 * files); several runs overlaid in one chart, with their resumes marked. */
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
#include "../../runtime/str.h"
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
/* a metrics.jsonl line is ~200 bytes; a longer one is not one */
#define PLOT_LINE_MAX ((size_t)1 << 20)

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

/* One run (an OUT directory): its name in the legend, its series, and the steps where it
 * resumed. A resume is a train line with "resumed": true (what `shardlora train` writes on
 * the first step of a resumed run; a stretch of such lines counts once) or a train line
 * whose step is not after the previous train line's (a log that repeats or restarts). */
typedef struct {
    char name[PATH_MAX];
    PlotSeries train, eval;
    int64_t *resumes; /* [nres], sorted, distinct after plot_run_finish */
    size_t nres, cap_res;
    long lines;         /* lines that are not blank */
    size_t train_lines; /* lines with a "loss", before plot_run_finish */
    int64_t prev_step;  /* the previous train line's step (-1: none yet) */
    int prev_resumed;   /* ... and whether it said "resumed" */
} PlotRun;

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

static void plot_run_add_resume(PlotRun *r, int64_t step) {
    if (r->nres == r->cap_res) {
        r->cap_res = r->cap_res ? 2 * r->cap_res : 8;
        r->resumes = realloc(r->resumes, r->cap_res * sizeof *r->resumes);
        SL_CHECK(r->resumes != NULL, "out of memory");
    }
    r->resumes[r->nres++] = step;
}

/* A train line at `step` ("resumed" as given): a resume when it says so first, or when the
 * step does not move forward. */
static void plot_run_train_line(PlotRun *r, int64_t step, int resumed) {
    if ((resumed && !r->prev_resumed) || (r->prev_step >= 0 && step <= r->prev_step))
        plot_run_add_resume(r, step);
    r->prev_step = step;
    r->prev_resumed = resumed;
}

/* One line of metrics.jsonl into the run; lines with neither "loss" nor "eval_loss" are
 * ignored. 0 with st = "PATH:LINE: reason" if the line is malformed. */
static int plot_parse_line(const char *line, size_t len, const char *where, long seq, PlotRun *r,
                           ErrStatus *st) {
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
    if (ok && loss && (ok = plot_value(loss, "loss", where, &v, st))) {
        plot_series_push(&r->train, (int64_t)step, seq, v);
        plot_run_train_line(r, (int64_t)step, json_is_true(json_object_get(o, "resumed")));
        r->train_lines++;
    }
    if (ok && eloss && (ok = plot_value(eloss, "eval_loss", where, &v, st)))
        plot_series_push(&r->eval, (int64_t)step, seq, v);
    json_decref(o);
    return ok;
}

/* Reads path into the run, in file order (plot_run_finish sorts it). */
static int plot_read_metrics(const char *path, PlotRun *r, ErrStatus *st) {
    FILE *f = afile_fopen_input(path, st);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int ok = 1;
    r->prev_step = -1;
    int cut;
    while (ok && (len = str_getline(&line, &cap, f, PLOT_LINE_MAX, &cut)) >= 0) {
        lineno++;
        if (cut) {
            ok = err_status_set(st, "%s:%ld: a line of %lld bytes: not a metrics.jsonl line", path,
                                lineno, (long long)len);
            break;
        }
        size_t blank = strspn(line, " \t\r\n");
        if (blank == (size_t)len) continue;
        r->lines++;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        ok = plot_parse_line(line, (size_t)len, where, lineno, r, st);
    }
    if (ok && ferror(f)) ok = err_status_set(st, "cannot read %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return ok;
}

static int plot_step_cmp(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Both series sorted and reduced (plot_series_finish), the resumes sorted and distinct. */
static void plot_run_finish(PlotRun *r) {
    plot_series_finish(&r->train);
    plot_series_finish(&r->eval);
    if (r->nres) qsort(r->resumes, r->nres, sizeof *r->resumes, plot_step_cmp);
    size_t k = 0;
    for (size_t i = 0; i < r->nres; i++)
        if (k == 0 || r->resumes[i] != r->resumes[k - 1]) r->resumes[k++] = r->resumes[i];
    r->nres = k;
}

static void plot_run_free(PlotRun *r) {
    free(r->train.p);
    free(r->eval.p);
    free(r->resumes);
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
    /* the quotients are rounded: a bound one step further out rather than a clipped point */
    if (a.lo > min) a.lo -= a.step;
    if (a.hi < max) a.hi += a.step;
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

/* How a line is drawn: colour, width, opacity, and a dash pattern (NULL: solid). */
typedef struct {
    const char *colour;
    double width, opacity;
    const char *dash;
} PlotStroke;

/* A polyline through the points (y from ys if given, else the points' values). */
static void plot_put_line(PlotBuf *b, const char *id, PlotStroke k, const PlotPoint *p,
                          const double *ys, size_t n, const PlotAxis *ax, const PlotAxis *ay) {
    plot_printf(b,
                "<polyline id=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
                "stroke-opacity=\"%.2f\"%s%s%s stroke-linejoin=\"round\" points=\"",
                id, k.colour, k.width, k.opacity, k.dash ? " stroke-dasharray=\"" : "",
                k.dash ? k.dash : "", k.dash ? "\"" : "");
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

/* A legend line: its text, the stroke of its sample line, a marker on it. */
typedef struct {
    char text[PATH_MAX + 96];
    PlotStroke k;
    int marker;
} PlotLegendEntry;

/* The legend box in the corner of the plot area that hides the fewest points. */
static void plot_put_legend(PlotBuf *b, const PlotLegendEntry *e, int ne, const PlotRun *runs,
                            int nruns, const PlotAxis *ax, const PlotAxis *ay) {
    size_t longest = 0;
    for (int i = 0; i < ne; i++)
        longest = strlen(e[i].text) > longest ? strlen(e[i].text) : longest;
    double w = 44 + 6.6 * (double)longest, h = 10 + 18.0 * ne, pad = 10;
    double cx[4] = {PLOT_X1 - pad - w, PLOT_X1 - pad - w, PLOT_X0 + pad, PLOT_X0 + pad};
    double cy[4] = {PLOT_Y0 + pad, PLOT_Y1 - pad - h, PLOT_Y1 - pad - h, PLOT_Y0 + pad};
    int best = 0;
    size_t best_n = SIZE_MAX;
    for (int k = 0; k < 4; k++) {
        size_t c = 0;
        for (int r = 0; r < nruns; r++)
            c += plot_count_in(runs[r].train.p, runs[r].train.n, ax, ay, cx[k], cy[k], cx[k] + w,
                               cy[k] + h) +
                 plot_count_in(runs[r].eval.p, runs[r].eval.n, ax, ay, cx[k], cy[k], cx[k] + w,
                               cy[k] + h);
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
                    "stroke-width=\"2\" stroke-opacity=\"%.2f\"%s%s%s/>",
                    x + 8, ly, x + 32, ly, e[i].k.colour, e[i].k.opacity,
                    e[i].k.dash ? " stroke-dasharray=\"" : "", e[i].k.dash ? e[i].k.dash : "",
                    e[i].k.dash ? "\"" : "");
        if (e[i].marker)
            plot_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>", x + 20, ly,
                        e[i].k.colour);
        plot_printf(b, "<text x=\"%.2f\" y=\"%.2f\">", x + 38, ly + 4);
        plot_put_xml(b, e[i].text);
        plot_printf(b, "</text>\n");
    }
    plot_printf(b, "</g>\n");
}

/* Axes that hold every finite point of every run and every resume step. */
static void plot_bounds(const PlotRun *runs, int n, PlotAxis *ax, PlotAxis *ay) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int r = 0; r < n; r++) {
        const PlotSeries *ser[2] = {&runs[r].train, &runs[r].eval};
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < ser[k]->n; i++) {
                const PlotPoint *p = &ser[k]->p[i];
                xmin = fmin(xmin, (double)p->step), xmax = fmax(xmax, (double)p->step);
                ymin = fmin(ymin, p->v), ymax = fmax(ymax, p->v);
            }
        for (size_t i = 0; i < runs[r].nres; i++) {
            xmin = fmin(xmin, (double)runs[r].resumes[i]);
            xmax = fmax(xmax, (double)runs[r].resumes[i]);
        }
    }
    if (xmax == xmin) xmin = xmin >= 1 ? xmin - 1 : 0, xmax += 1;
    *ax = plot_axis_nice(xmin, xmax, 8, 1);
    *ay = plot_axis_nice(ymin, ymax, 6, 0);
}

/* The XML prolog, the <svg> element, the document title, the background and the title
 * text at the top. */
static void plot_put_head(PlotBuf *b, const char *title) {
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
}

/* The smoothed train curve of r (n >= PLOT_SMOOTH_MIN_POINTS) and its legend text. */
static void plot_put_smooth(PlotBuf *b, const char *id, const PlotRun *r, const char *colour,
                            const char *prefix, const PlotAxis *ax, const PlotAxis *ay,
                            PlotLegendEntry *leg) {
    double *ys = malloc(r->train.n * sizeof *ys);
    SL_CHECK(ys != NULL, "out of memory");
    double w = plot_smooth_weight(r->train.n);
    plot_smooth_ema(ys, r->train.p, r->train.n, w);
    const PlotStroke k = {colour, 2, 1, NULL};
    plot_put_line(b, id, k, r->train.p, ys, r->train.n, ax, ay);
    free(ys);
    *leg = (PlotLegendEntry){.k = k};
    if (w == PLOT_SMOOTH_WEIGHT)
        snprintf(leg->text, sizeof leg->text, "%strain loss, smoothed (EMA %g, as TensorBoard)",
                 prefix, w);
    else
        snprintf(leg->text, sizeof leg->text,
                 "%strain loss, smoothed (EMA %.4g, as TensorBoard's %g on %d samples)", prefix, w,
                 PLOT_SMOOTH_WEIGHT, PLOT_SMOOTH_SAMPLES);
}

/* Up to 10 runs get a colour each (matplotlib's default cycle, "tab10"); more reuse them. */
static const char *const plot_palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define PLOT_NPALETTE ((int)(sizeof plot_palette / sizeof plot_palette[0]))
/* A resume of a single run; with several, a resume has its run's colour. */
#define PLOT_RESUME_COLOUR "#555555"

static const char *plot_run_colour(int k, int multi) {
    return multi ? plot_palette[k % PLOT_NPALETTE] : PLOT_TRAIN_COLOUR;
}

/* Run k's curves and legend lines (returns how many): the train loss (raw, faint under a
 * smoothed one from PLOT_SMOOTH_MIN_POINTS points on, else with markers) and the eval loss
 * with markers. With several runs (multi) the ids get a "runK-" prefix, the texts the run's
 * name, and each run one colour, its eval line dashed; a single run keeps train blue and
 * eval red. */
static int plot_put_run(PlotBuf *b, const PlotRun *r, int k, int multi, const PlotAxis *ax,
                        const PlotAxis *ay, PlotLegendEntry *leg) {
    const char *tc = plot_run_colour(k, multi), *ec = multi ? tc : PLOT_EVAL_COLOUR;
    char pre[32] = "", id[64], prefix[PATH_MAX + 4] = "", what[PATH_MAX + 32];
    if (multi) {
        snprintf(pre, sizeof pre, "run%d-", k + 1);
        snprintf(prefix, sizeof prefix, "%s: ", r->name);
    }
    /* Markers on the train line only while it is not smoothed: the raw points are then
     * few enough to tell apart, and a faint line with solid markers would not be faint. */
    const int smooth = r->train.n >= PLOT_SMOOTH_MIN_POINTS;
    const PlotStroke raw = {tc, 1.5, smooth ? 0.3 : 1, NULL};
    int nl = 0;
    snprintf(id, sizeof id, "%strain-raw", pre);
    plot_put_line(b, id, raw, r->train.p, NULL, r->train.n, ax, ay);
    leg[nl] = (PlotLegendEntry){.k = raw, .marker = !smooth};
    snprintf(leg[nl++].text, sizeof leg->text, "%strain loss%s", prefix, smooth ? " (raw)" : "");
    snprintf(what, sizeof what, "%strain loss", prefix);
    snprintf(id, sizeof id, smooth ? "%strain-smooth" : "%strain-points", pre);
    if (smooth)
        plot_put_smooth(b, id, r, tc, prefix, ax, ay, &leg[nl++]);
    else
        plot_put_markers(b, id, tc, what, r->train.p, r->train.n, ax, ay);
    if (r->eval.n) {
        const PlotStroke ek = {ec, 1.5, 1, multi ? "6 3" : NULL};
        snprintf(id, sizeof id, "%seval", pre);
        plot_put_line(b, id, ek, r->eval.p, NULL, r->eval.n, ax, ay);
        snprintf(id, sizeof id, "%seval-points", pre);
        snprintf(what, sizeof what, "%seval loss", prefix);
        plot_put_markers(b, id, ec, what, r->eval.p, r->eval.n, ax, ay);
        leg[nl] = (PlotLegendEntry){.k = ek, .marker = 1};
        snprintf(leg[nl++].text, sizeof leg->text, "%seval loss", prefix);
    }
    return nl;
}

/* A dashed vertical line across the plot area at every step where a run resumed, with
 * "NAME: resumed at step S" as its tooltip (group "resumes"). 0 if no run resumed. */
static int plot_put_resumes(PlotBuf *b, const PlotRun *runs, int n, const PlotAxis *ax) {
    size_t total = 0;
    for (int r = 0; r < n; r++)
        total += runs[r].nres;
    if (total == 0) return 0;
    plot_printf(b, "<g id=\"resumes\" stroke-width=\"1.2\" stroke-dasharray=\"5 4\">\n");
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < runs[r].nres; i++) {
            const double x = plot_px(ax, (double)runs[r].resumes[i]);
            plot_printf(b,
                        "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\">"
                        "<title>",
                        x, PLOT_Y0, x, PLOT_Y1, n > 1 ? plot_run_colour(r, 1) : PLOT_RESUME_COLOUR);
            plot_put_xml(b, runs[r].name);
            plot_printf(b, ": resumed at step %lld</title></line>\n",
                        (long long)runs[r].resumes[i]);
        }
    plot_printf(b, "</g>\n");
    return 1;
}

/* The whole SVG document into b. Every run has at least one train point. */
static void plot_render(PlotBuf *b, const char *title, const PlotRun *runs, int n) {
    PlotAxis ax, ay;
    plot_bounds(runs, n, &ax, &ay);
    plot_put_head(b, title);
    plot_put_axes(b, &ax, &ay);
    const int resumed = plot_put_resumes(b, runs, n, &ax);
    PlotLegendEntry *leg = calloc((size_t)(3 * n + 1), sizeof *leg);
    SL_CHECK(leg != NULL, "out of memory");
    int nl = 0;
    for (int k = 0; k < n; k++)
        nl += plot_put_run(b, &runs[k], k, n > 1, &ax, &ay, leg + nl);
    if (resumed) {
        leg[nl] = (PlotLegendEntry){.k = {PLOT_RESUME_COLOUR, 1.2, 1, "5 4"}};
        snprintf(leg[nl++].text, sizeof leg->text, "resumed (dashed vertical line)");
    }
    plot_put_legend(b, leg, nl, runs, n, &ax, &ay);
    plot_printf(b, "</svg>\n");
    free(leg);
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

/* dir without trailing slashes (malloc'd), so that messages read OUT/metrics.jsonl. */
static char *plot_trim_dir(const char *dir) {
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    char *out = malloc(dlen + 1);
    SL_CHECK(out != NULL, "out of memory");
    memcpy(out, dir, dlen);
    out[dlen] = 0;
    return out;
}

/* dir/name, without a doubled slash when dir is "/" (malloc'd). */
static char *plot_in_dir(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    SL_CHECK(p != NULL, "out of memory");
    snprintf(p, n, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name);
    return p;
}

/* Reads dir/metrics.jsonl into r and names r after dir. 0 with st set (and the exit status
 * in *rc) when the file is missing or malformed or has no finite train loss. */
static int plot_load_run(PlotRun *r, const char *dir, int *rc, ErrStatus *st) {
    char *mpath = plot_in_dir(dir, "metrics.jsonl");
    plot_default_title(r->name, sizeof r->name, dir);
    int ok = plot_read_metrics(mpath, r, st);
    plot_run_finish(r);
    if (ok && r->train.n == 0)
        ok = err_status_set(st, "%s: %s: nothing to plot", mpath,
                            r->lines == 0         ? "no JSON lines (the file is empty)"
                            : r->train_lines == 0 ? "no training lines (objects with a \"loss\")"
                                                  : "every training loss is NaN or infinite");
    if (!ok) *rc = EXIT_BAD_INPUT;
    free(mpath);
    return ok;
}

/* Runs whose directories share a name are named by their paths as given instead. */
static void plot_unique_names(PlotRun *runs, char **dirs, int n) {
    char *clash = calloc((size_t)n, 1);
    SL_CHECK(clash != NULL, "out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            clash[i] |= j != i && strcmp(runs[i].name, runs[j].name) == 0;
    for (int i = 0; i < n; i++)
        if (clash[i]) snprintf(runs[i].name, sizeof runs[i].name, "%s", dirs[i]);
    free(clash);
    for (int i = 0; i < n; i++) /* still equal: the same directory twice */
        for (int j = 0; j < i; j++)
            if (strcmp(runs[i].name, runs[j].name) == 0) {
                size_t l = strlen(runs[i].name);
                snprintf(runs[i].name + l, sizeof runs[i].name - l, " (%d)", i + 1);
            }
}

/* The default title: the run's name, or the names of several runs joined by ", " (past
 * PLOT_TITLE_MAX bytes, the count and as many names as fit). */
#define PLOT_TITLE_MAX 90
static void plot_title(char *buf, size_t n, const PlotRun *runs, int nruns) {
    if (nruns == 1) {
        snprintf(buf, n, "%s", runs[0].name);
        return;
    }
    size_t total = 0;
    for (int i = 0; i < nruns; i++)
        total += strlen(runs[i].name) + 2;
    size_t off = total > PLOT_TITLE_MAX ? (size_t)snprintf(buf, n, "%d runs: ", nruns) : 0;
    buf[off] = 0;
    for (int i = 0; i < nruns && off < n; i++) {
        if (total > PLOT_TITLE_MAX && off + strlen(runs[i].name) > PLOT_TITLE_MAX) {
            snprintf(buf + off, n - off, "...");
            return;
        }
        off +=
            (size_t)snprintf(buf + off, n - off, "%s%s", runs[i].name, i + 1 < nruns ? ", " : "");
    }
}

/* The line that says what was written: "(N train points, M eval points)" for one run; per
 * run, with its resumes, for several. */
static void plot_print_written(const char *svg, const PlotRun *runs, int n) {
    if (n == 1) {
        fprintf(stderr, "wrote %s (%zu train points, %zu eval points)\n", svg, runs[0].train.n,
                runs[0].eval.n);
        return;
    }
    fprintf(stderr, "wrote %s (", svg);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%s%s: %zu train points, %zu eval points, %zu resume%s", i ? "; " : "",
                runs[i].name, runs[i].train.n, runs[i].eval.n, runs[i].nres,
                runs[i].nres == 1 ? "" : "s");
    fprintf(stderr, ")\n");
}

/* Loads the runs, draws them and writes svg; returns the exit status. */
static int plot_runs(char **dirs, int n, const char *svg, const char *title) {
    PlotRun *runs = calloc((size_t)n, sizeof *runs);
    SL_CHECK(runs != NULL, "out of memory");
    ErrStatus st;
    int rc = 0, ok = 1;
    for (int i = 0; i < n && ok; i++)
        ok = plot_load_run(&runs[i], dirs[i], &rc, &st);
    if (ok) {
        plot_unique_names(runs, dirs, n);
        char deftitle[PATH_MAX];
        plot_title(deftitle, sizeof deftitle, runs, n);
        PlotBuf b = {0};
        plot_render(&b, title ? title : deftitle, runs, n);
        if (!afile_write_all(svg, b.s, b.n, &st))
            ok = 0, rc = EXIT_IO;
        else
            plot_print_written(svg, runs, n);
        free(b.s);
    }
    if (!ok) fprintf(stderr, "shardlora plot: %s\n", st.msg);
    for (int i = 0; i < n; i++)
        plot_run_free(&runs[i]);
    free(runs);
    return rc;
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
         .help = "where to write the SVG (default: OUT/loss.svg; ./loss-compare.svg for several runs)"},
        {.name = "title",
         .type = ARG_STR,
         .dst = &title,
         .metavar = "TEXT",
         .help = "the chart's title (default: the name of the OUT directory, or the names of several)"},
    };
    // clang-format on
    int ns = (int)(sizeof specs / sizeof specs[0]);
    const char *usage = "shardlora plot OUT [OUT ...] [--out FILE] [--title TEXT]";
    const char *about =
        "Read OUT/metrics.jsonl (written by `shardlora train --out OUT`) and write a\n"
        "self-contained SVG chart, to open in a browser, of the training and evaluation loss\n"
        "against the step. From 30 train points on, the raw train loss is drawn faint under a\n"
        "smoothed one: a debiased exponential moving average with TensorBoard's default weight\n"
        "0.6 (past 1000 points, 0.6 per 1/1000 of the points, as TensorBoard smooths the 1000\n"
        "samples it keeps). Where a step appears more than once (a resumed run) its last line\n"
        "wins; NaN and infinite values (numbers, strings such as \"NaN\", bare NaN/Infinity,\n"
        "magnitudes over 1e300) are left out. A dashed vertical line marks each resume: a\n"
        "line with \"resumed\": true (train writes it on a resumed run's first step) or a\n"
        "step that is not after the one before it.\n"
        "Several OUT directories are overlaid in one chart, a colour per run (its eval loss\n"
        "dashed), named by their directories in the legend; the default title lists them and\n"
        "the default file is ./loss-compare.svg. The axes hold every point of every run.\n"
        "Exit status: 2 bad command line, 3 missing or malformed metrics file or no finite\n"
        "training loss in it, 4 the SVG cannot be written.";
    int nruns = 0, rc;
    while (2 + nruns < argc && strncmp(argv[2 + nruns], "-", 1) != 0)
        nruns++;
    if (!args_command(specs, ns, argc, argv, 2 + nruns, "plot", usage, about, &rc)) return rc;
    if (nruns == 0) {
        fprintf(stderr, "shardlora plot: the OUT directory is required (the first argument; "
                        "several to overlay runs)\n");
        args_print_help(stderr, usage, about, specs, ns);
        return EXIT_USAGE;
    }
    char **dirs = malloc((size_t)nruns * sizeof *dirs);
    SL_CHECK(dirs != NULL, "out of memory");
    for (int i = 0; i < nruns; i++)
        dirs[i] = plot_trim_dir(argv[2 + i]);
    char *svg = out_file     ? str_dup(out_file)
                : nruns == 1 ? plot_in_dir(dirs[0], "loss.svg")
                             : str_dup("loss-compare.svg");
    rc = plot_runs(dirs, nruns, svg, title);
    for (int i = 0; i < nruns; i++)
        free(dirs[i]);
    free(dirs);
    free(svg);
    return rc;
}
