from models.chat_templates import ChatMessage, render_chat


def test_gemma_turns_and_system_folded_into_first_user_turn():
    r = render_chat("gemma", [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"),
                              ChatMessage("assistant", "Hello"), ChatMessage("user", "Bye")])
    assert r.text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert all(seg.markup for seg in r.segments if "<start_of_turn>" in seg.text)
    assert not any(seg.markup for seg in r.segments if seg.text in ("Hello", "Bye"))


def test_templates_name_the_markup_that_ends_an_answer():
    assert render_chat("gemma", [ChatMessage("user", "x")]).stop_markup == ("<start_of_turn>",)
    assert render_chat("chatml", [ChatMessage("user", "x")]).stop_markup == ("<|im_start|>",)
