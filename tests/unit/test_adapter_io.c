/* model/adapter_io: adio_hub_id_ok, which decides whether a model card may name a base model
 * in its front matter (Hugging Face Hub repository ids, as huggingface_hub's validate_repo_id
 * accepts them; a local path never passes with need_owner). */
#include "../../model/adapter_io.h"

#include "check.h"

static void check_id(const char *s, int need_owner, int want) {
    const int got = adio_hub_id_ok(s, need_owner);
    CHECK_TRUE(got == want, "adio_hub_id_ok(\"%s\", %d) = %d, expected %d", s ? s : "(null)",
               need_owner, got, want);
}

int main(void) {
    /* ids the Hub has */
    check_id("meta-llama/Llama-3.1-8B", 1, 1);
    check_id("Qwen/Qwen2.5-0.5B-Instruct", 1, 1);
    check_id("mistralai/Mistral-7B-v0.1", 1, 1);
    check_id("acme_labs/tiny.model_2", 1, 1);
    check_id("gpt2", 0, 1); /* a bare name: valid, but not taken from _name_or_path */
    check_id("gpt2", 1, 0);
    /* local paths and malformed ids */
    check_id("/home/me/models/llama", 1, 0);
    check_id("/home/me/models/llama", 0, 0);
    check_id("./llama", 1, 0);
    check_id("../models/llama", 1, 0);
    check_id("~/llama", 1, 0);
    check_id("models/llama/7b", 1, 0);
    check_id("owner/", 1, 0);
    check_id("/name", 1, 0);
    check_id("", 0, 0);
    check_id(NULL, 0, 0);
    check_id("own er/name", 1, 0);
    check_id("owner/na--me", 1, 0);
    check_id("owner/na..me", 1, 0);
    check_id("owner/-name", 1, 0);
    check_id("owner/name.", 1, 0);
    check_id("C:\\models\\llama", 0, 0);
    /* at most 96 characters per part */
    char longid[128];
    memset(longid, 'a', sizeof longid);
    memcpy(longid, "o/", 2);
    longid[2 + 96] = 0;
    check_id(longid, 1, 1);
    longid[2 + 96] = 'a';
    longid[2 + 97] = 0;
    check_id(longid, 1, 0);
    printf("adio_hub_id_ok: %d checks\n", check_count);
    return check_finish();
}
